// The tests' OpenID Connect provider: the certified `oidc-provider` package on 127.0.0.1.
//
// node provider.mjs   with environment
//   IDP_PORT            port to listen on (127.0.0.1)
//   IDP_CLIENT_ID, IDP_CLIENT_SECRET, IDP_REDIRECT_URIS (comma-separated)
//   IDP_CLAIMS_AT_USERINFO=1 to keep profile/email/groups out of the ID token
// Prints "listening <issuer>" once it accepts connections.
//
// Users and their groups are below (USERS). The login page is a plain form
// (login, password); consent is given with the login (a first-party client).
// PKCE is required for every authorization request.
//
// For the refusal tests only, POST /__test__/tamper {"mode": M} makes the NEXT
// token response carry a bad ID token: "signature" (claims changed after
// signing), "audience" (re-signed for another client), "expired" (re-signed
// with exp an hour ago), "issuer" (re-signed by another issuer), "unknown-key"
// (signed with a key not in the JWKS). Everything else is the package's own.
import crypto from 'node:crypto';
import * as jose from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
const issuer = `http://127.0.0.1:${port}`;
const clientId = process.env.IDP_CLIENT_ID;

export const USERS = {
  alice: { password: 'alice-password', sub: 'sub-alice-0001', email: 'alice@example.test',
           name: 'Alice DBA', groups: ['dba'] },
  bob: { password: 'bob-password', sub: 'sub-bob-0002', email: 'bob@example.test',
         name: 'Bob Developer', groups: ['devs'] },
  carol: { password: 'carol-password', sub: 'sub-carol-0003', email: 'carol@example.test',
           name: 'Carol Ops', groups: ['ops', 'devs'] },
  dave: { password: 'dave-password', sub: 'sub-dave-0004', email: 'dave@example.test',
          name: 'Dave Nobody', groups: [] },
};
const BY_SUB = Object.fromEntries(Object.entries(USERS).map(([login, u]) => [u.sub, { login, ...u }]));

const { privateKey } = await jose.generateKeyPair('RS256', { extractable: true });
const signingJwk = { ...(await jose.exportJWK(privateKey)), kid: 'test-key-1', alg: 'RS256', use: 'sig' };
const signingKey = await jose.importJWK(signingJwk, 'RS256');
const { privateKey: strangerKey } = await jose.generateKeyPair('RS256');

const configuration = {
  clients: [{
    client_id: clientId,
    client_secret: process.env.IDP_CLIENT_SECRET,
    redirect_uris: process.env.IDP_REDIRECT_URIS.split(','),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  jwks: { keys: [signingJwk] },
  cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
  pkce: { required: () => true },
  scopes: ['openid', 'profile', 'email', 'groups'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email', 'email_verified'],
    groups: ['groups'],
  },
  // put the scopes' claims in the ID token (as Okta, Keycloak and Azure AD can);
  // IDP_CLAIMS_AT_USERINFO=1: only at the userinfo endpoint (the package's default)
  conformIdTokenClaims: process.env.IDP_CLAIMS_AT_USERINFO === '1',
  features: { devInteractions: { enabled: false } },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  async findAccount(_ctx, sub) {
    const user = BY_SUB[sub];
    if (!user) return undefined;
    return {
      accountId: sub,
      async claims() {
        return { sub, name: user.name, preferred_username: user.login, email: user.email,
                 email_verified: true, groups: user.groups };
      },
    };
  },
};

const provider = new Provider(issuer, configuration);
let tamperMode = null;

function readBody(req) {
  return new Promise((resolve, reject) => {
    let data = '';
    req.on('data', (chunk) => { data += chunk; });
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}

function loginPage(uid, error) {
  const message = error ? `<p class="error">${error}</p>` : '';
  return `<!doctype html><html><head><title>Test IdP: sign in</title></head><body>
<h1>Test identity provider</h1>${message}
<form method="post" action="/interaction/${uid}/login">
<label>Login <input id="idp-login" name="login" autocomplete="username"></label>
<label>Password <input id="idp-password" name="password" type="password"></label>
<button type="submit">Sign in</button></form></body></html>`;
}

async function finish(ctx, details, accountId) {
  const grant = new provider.Grant({ accountId, clientId: details.params.client_id });
  grant.addOIDCScope(String(details.params.scope));
  const grantId = await grant.save();
  const returnTo = await provider.interactionResult(ctx.req, ctx.res,
    { login: { accountId }, consent: { grantId } }, { mergeWithLastSubmission: false });
  ctx.status = 303;
  ctx.redirect(returnTo);
}

async function tamper(idToken, mode) {
  const [header, payload] = idToken.split('.');
  const claims = JSON.parse(Buffer.from(payload, 'base64url').toString());
  const now = Math.floor(Date.now() / 1000);
  const sign = (c, key = signingKey, kid = 'test-key-1') =>
    new jose.SignJWT(c).setProtectedHeader({ alg: 'RS256', kid, typ: 'JWT' }).sign(key);
  if (mode === 'signature') {
    const forged = Buffer.from(JSON.stringify({ ...claims, groups: ['ops'] })).toString('base64url');
    return `${header}.${forged}.${idToken.split('.')[2]}`;
  }
  if (mode === 'audience') return sign({ ...claims, aud: 'some-other-client' });
  if (mode === 'expired') return sign({ ...claims, iat: now - 7200, exp: now - 3600 });
  if (mode === 'issuer') return sign({ ...claims, iss: 'http://127.0.0.1:1/evil' });
  if (mode === 'unknown-key') return sign(claims, strangerKey, 'stranger');
  throw new Error(`unknown tamper mode ${mode}`);
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/__test__/tamper' && ctx.method === 'POST') {
    tamperMode = JSON.parse(await readBody(ctx.req)).mode;
    ctx.body = { mode: tamperMode };
    return;
  }
  const match = ctx.path.match(/^\/interaction\/([^/]+)(\/login)?$/);
  if (!match) {
    await next();
    if (ctx.path === '/token' && tamperMode && ctx.body && ctx.body.id_token) {
      const mode = tamperMode;
      tamperMode = null;
      ctx.body = { ...ctx.body, id_token: await tamper(ctx.body.id_token, mode) };
    }
    return;
  }
  const details = await provider.interactionDetails(ctx.req, ctx.res);
  if (ctx.method === 'GET' && !match[2]) {
    if (details.prompt.name === 'consent' && details.session?.accountId) {
      await finish(ctx, details, details.session.accountId);
      return;
    }
    ctx.type = 'html';
    ctx.body = loginPage(details.uid, '');
    return;
  }
  if (ctx.method === 'POST' && match[2]) {
    const form = new URLSearchParams(await readBody(ctx.req));
    const user = USERS[form.get('login')];
    if (!user || user.password !== form.get('password')) {
      ctx.type = 'html';
      ctx.status = 401;
      ctx.body = loginPage(details.uid, 'Wrong login or password.');
      return;
    }
    await finish(ctx, details, user.sub);
    return;
  }
  ctx.status = 405;
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
