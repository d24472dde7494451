import time, re
from conftest import csrf_from

def test_flow(logged_in):
    c = logged_in
    r = c.get("/targets/demo-staging/plan?command=upgrade&revision=heads")
    t = r.get_data(as_text=True)
    assert r.status_code == 200, t[:3000]
    print(re.sub(r"<[^>]+>", "", t.split('id="plan"')[1])[:1500])
    h = re.search(r'name="plan_hash" value="(\w+)"', t).group(1)
    r = c.post("/targets/demo-staging/jobs", data={"csrf_token": csrf_from(t), "command": "upgrade", "revision": "heads", "plan_hash": h})
    assert r.status_code == 303, r.get_data(as_text=True)[:2000]
    loc = r.headers["Location"]
    for _ in range(60):
        j = c.get("/api/v1/jobs/" + loc.rsplit("/",1)[1]).json
        if j["status"] not in ("queued", "running"): break
        time.sleep(0.5)
    print(j)
    assert j["status"] == "succeeded"
