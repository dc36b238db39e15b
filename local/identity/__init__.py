"""A local OpenID Connect issuer serving a Keycloak realm export on Keycloak's URL layout, built on Authlib.

Users, passwords, clients, secrets, redirect URIs, roles and lifespans all come from the realm file that
Keycloak imports in the cluster (knative/keycloak/realm-shop.json), so tokens look the same in both places:
RS256 JWTs with Keycloak's claims (azp, typ, sid, realm_access, resource_access, audiences, ...).
Signing keys are RSA 2048 PEM files in the data folder and survive restarts; authorization codes, sessions
and refresh tokens (opaque random strings, not Keycloak's JWTs) live in memory, so a restart ends sessions
while access tokens already issued stay valid until they expire.

Keys rotate over HTTP too, for tests and demos, with a bearer token of a user or service account holding
the realm's `admin` role: GET /admin/realms/<realm>/keys lists them (Keycloak's KeysMetadataRepresentation:
the signing key ACTIVE, older ones PASSIVE, still published), POST .../keys/rotate adds a new signing key and
POST .../keys/retire-old withdraws every other one. Keycloak rotates by adding and removing key provider
components instead; these two endpoints are this local issuer's own.

The modules: `realm` (the realm file), `keys` (signing keys), `sessions` (what is kept in memory), `tokens`
(Keycloak's claims), `server` (the protocol, on Authlib), `pages` (HTML), `issuer` (the routes).
"""

from local.identity.issuer import Issuer

__all__ = ["Issuer"]
