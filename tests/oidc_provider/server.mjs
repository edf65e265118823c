// Local OpenID Provider for the portal's tests, built on panva's OpenID Certified
// oidc-provider. Usage: node server.mjs CONFIG.json (or OIDC_PROVIDER_CONFIG=CONFIG.json).
// Prints exactly one line, "ready <issuer>", on stdout once it accepts connections.
//
// Config (JSON):
//   host        "127.0.0.1" (loopback only)
//   port        0 picks a free port; pass the previous one to restart on the same issuer
//   jwksPath    private JWKS file; RSA + EC P-256 keys are generated into it when absent
//   rotateKeys  true: put a fresh RSA + EC key pair in front (they sign from now on);
//               the older keys stay published so earlier tokens still verify
//   clients     oidc-provider client metadata (client_id, client_secret, redirect_uris,
//               post_logout_redirect_uris, id_token_signed_response_alg, ...)
//   accounts    { "<sub>": { name, email, roles: [...], patient_id (the chart's MRN), ... } }
//   claims      optional override of the scope -> claims map below
//   ttl         optional seconds per artifact: AccessToken, AuthorizationCode, IdToken,
//               RefreshToken, Interaction, Session, Grant
//   acrValues   optional acr values the provider advertises (acr_values_supported)
//   loginAcr    optional acr recorded for every sign-in through the login form, so ID tokens carry it
// Back-channel logout is enabled: clients with a backchannel_logout_uri are told when a session ends.
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const DEFAULT_CLAIMS = {
  openid: ['sub'],
  profile: ['name', 'given_name', 'family_name', 'preferred_username', 'updated_at'],
  email: ['email', 'email_verified'],
  roles: ['roles'],
  patient_id: ['patient_id'],
};

const DEFAULT_TTL = {
  AccessToken: 300,
  AuthorizationCode: 60,
  IdToken: 300,
  RefreshToken: 3600,
  Interaction: 600,
  Session: 3600,
  Grant: 3600,
};

function fail(message) {
  process.stderr.write(`oidc test provider: ${message}\n`);
  process.exit(2);
}

function thumbprint(jwk) {
  const members = jwk.kty === 'RSA'
    ? { e: jwk.e, kty: jwk.kty, n: jwk.n }
    : { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y };
  return createHash('sha256').update(JSON.stringify(members)).digest('base64url');
}

function newSigningKeys() {
  const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' });
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  return [
    { ...rsa, alg: 'RS256', use: 'sig', kid: thumbprint(rsa) },
    { ...ec, alg: 'ES256', use: 'sig', kid: thumbprint(ec) },
  ];
}

function loadJwks(path, rotate) {
  const existing = path && existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')).keys : [];
  const keys = existing.length && !rotate ? existing : [...newSigningKeys(), ...existing];
  if (path) writeFileSync(path, `${JSON.stringify({ keys }, null, 2)}\n`, { mode: 0o600 });
  return { keys };
}

function findAccountFor(accounts) {
  return async (_ctx, sub) => {
    const claims = accounts[sub];
    if (!claims) return undefined;
    return { accountId: sub, claims: async () => ({ ...claims, sub }) };
  };
}

const configPath = process.argv[2] || process.env.OIDC_PROVIDER_CONFIG;
if (!configPath) fail('pass the config file path as argv[2] or OIDC_PROVIDER_CONFIG');
const config = JSON.parse(readFileSync(configPath, 'utf8'));

const host = config.host ?? '127.0.0.1';
if (!['127.0.0.1', 'localhost', '::1'].includes(host)) fail(`refusing non-loopback host ${host}`);

const server = createServer();
server.listen(config.port ?? 0, host, () => {
  const { port } = server.address();
  const issuer = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  const provider = new Provider(issuer, {
    clients: config.clients ?? [],
    jwks: loadJwks(config.jwksPath, Boolean(config.rotateKeys)),
    findAccount: findAccountFor(config.accounts ?? {}),
    claims: config.claims ?? DEFAULT_CLAIMS,
    conformIdTokenClaims: false,
    pkce: { required: () => true },
    responseTypes: ['code'],
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    acrValues: config.acrValues ?? [],
    // Outgoing calls (back-channel logout) go to the portal on loopback, which the provider's SSRF
    // guard refuses as a special-use address; this provider only ever runs on loopback in tests.
    fetch: (url, { dispatcher, ...options }) => globalThis.fetch(url, options),
    features: {
      backchannelLogout: { enabled: true },
      devInteractions: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
    },
    ttl: { ...DEFAULT_TTL, ...config.ttl },
  });
  if (config.loginAcr) {
    // The quick-start login form records no acr; stand in for a provider whose login proves one.
    const finish = provider.interactionFinished.bind(provider);
    provider.interactionFinished = (req, res, result, options) => finish(
      req, res, result.login ? { ...result, login: { ...result.login, acr: config.loginAcr } } : result, options,
    );
  }
  provider.on('backchannel.error', (_ctx, err, client) => process.stderr.write(
    `backchannel.error ${client.clientId}: ${err.message} ${err.cause ?? ""}\n`,
  ));
  provider.on('server_error', (_ctx, err) => process.stderr.write(`server_error: ${err.stack}\n`));

  server.on('request', provider.callback());
  process.stdout.write(`ready ${issuer}\n`);
});
server.on('error', (err) => fail(err.message));

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => process.exit(0));
}
