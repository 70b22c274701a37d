"""The Authenticator both front doors ask: API keys with roles, HS256 JWTs, and what each
gRPC method needs. No services: credentials in, a Principal or Unauthenticated out."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from common.rpc.auth import METHOD_ROLES, TASK_SERVICE_PREFIX, required_role
from common.rpc.gen import task_service_pb2 as pb
from common.security import ANONYMOUS, Principal, Role
from common.security.authenticator import (
    Authenticator,
    Unauthenticated,
    credential_metadata,
    fingerprint,
)

SECRET = "0f4c9a8e7b6d5c4b3a29181706f5e4d3c2b1a09f8e7d6c5b"
KEYS = {
    "reader-key-0001": ["TaskRead"],
    "writer-key-0002": ["TaskWrite"],
    "admin-key-0003": ["Admin"],
}


@pytest.fixture
def auth() -> Authenticator:
    return Authenticator(enabled=True, api_keys=KEYS, jwt_secret=SECRET)


def token(secret: str = SECRET, algorithm: str = "HS256", **claims) -> str:
    body = {"sub": "alice", "exp": int(time.time()) + 60, "roles": ["TaskWrite"], **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def refused(auth: Authenticator, headers: dict[str, str]) -> str:
    with pytest.raises(Unauthenticated) as err:
        auth.authenticate(headers)
    return err.value.reason


def test_each_key_is_its_own_principal_with_its_roles(auth):
    reader = auth.authenticate({"X-API-Key": "reader-key-0001"})
    admin = auth.authenticate({"x-api-key": "admin-key-0003"})
    assert reader.roles == {Role.TASK_READ} and admin.roles == {Role.ADMIN}
    assert reader.name != admin.name


def test_a_key_is_named_by_a_fingerprint_never_by_the_key(auth):
    principal = auth.authenticate({"X-API-Key": "writer-key-0002"})
    assert principal.name == "key:" + fingerprint("writer-key-0002")
    assert "writer-key" not in principal.name and len(principal.name) == len("key:") + 12


def test_admin_implies_every_role_and_task_write_implies_task_read(auth):
    admin = auth.authenticate({"X-API-Key": "admin-key-0003"})
    writer = auth.authenticate({"X-API-Key": "writer-key-0002"})
    reader = auth.authenticate({"X-API-Key": "reader-key-0001"})
    assert all(admin.may(role) for role in Role)
    assert writer.may(Role.TASK_READ) and writer.may(Role.TASK_WRITE)
    assert not writer.may(Role.ADMIN)
    assert reader.may(Role.TASK_READ) and not reader.may(Role.TASK_WRITE)


def test_an_unknown_or_empty_key_is_refused(auth):
    assert refused(auth, {"X-API-Key": "reader-key-0002"}) == "unknown API key"
    assert refused(auth, {"X-API-Key": ""}) == "unknown API key"
    assert refused(auth, {"X-API-Key": "x" * 10_000}) == "unknown API key"


def test_no_credential_is_refused_with_a_challenge_for_both_schemes(auth):
    with pytest.raises(Unauthenticated) as err:
        auth.authenticate({"Accept": "application/json"})
    assert "X-API-Key" in err.value.reason
    challenge = err.value.challenge()
    assert challenge.startswith('Bearer realm="tasklab"') and 'ApiKey realm="tasklab"' in challenge


def test_a_wrong_key_is_refused_even_when_a_valid_token_rides_along(auth):
    headers = {"X-API-Key": "not-a-key", **bearer(token())}
    assert refused(auth, headers) == "unknown API key"


def test_a_valid_token_names_its_subject_and_grants_its_roles(auth):
    principal = auth.authenticate(bearer(token(roles=["TaskRead", "Admin"])))
    assert principal == Principal("jwt:alice", frozenset({Role.TASK_READ, Role.ADMIN}))


def test_role_names_this_platform_does_not_know_are_ignored(auth):
    principal = auth.authenticate(bearer(token(roles=["billing:admin", "TaskRead"])))
    assert principal.roles == {Role.TASK_READ}
    assert auth.authenticate(bearer(token(roles=None))).roles == frozenset()


def test_an_expired_token_is_refused(auth):
    assert refused(auth, bearer(token(exp=int(time.time()) - 5))) == "token expired"


def test_leeway_tolerates_a_little_clock_skew_on_expiry():
    lenient = Authenticator(enabled=True, jwt_secret=SECRET, jwt_leeway=30)
    assert lenient.authenticate(bearer(token(exp=int(time.time()) - 5))).name == "jwt:alice"


def test_a_token_without_exp_or_sub_is_refused(auth):
    assert refused(auth, bearer(token(exp=None))) == "token lacks the required 'exp' claim"
    assert refused(auth, bearer(token(sub=None))) == "token lacks the required 'sub' claim"


def test_a_token_signed_with_another_secret_is_refused(auth):
    forged = token(secret="f" + SECRET[1:])
    assert refused(auth, bearer(forged)) == "token signature does not verify"


def test_an_unsigned_alg_none_token_is_refused(auth):
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    claims = {"sub": "mallory", "exp": int(time.time()) + 60, "roles": ["Admin"]}
    unsigned = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."
    assert refused(auth, bearer(unsigned)) == "token algorithm not accepted (only HS256)"


def test_a_token_with_another_algorithm_is_refused(auth):
    assert "only HS256" in refused(auth, bearer(token(algorithm="HS384")))


def test_a_malformed_token_or_another_scheme_is_refused(auth):
    assert refused(auth, bearer("not.a.token")) == "token is malformed"
    assert "Bearer TOKEN" in refused(auth, {"Authorization": "Basic YWxpY2U6cHc="})
    assert "Bearer TOKEN" in refused(auth, {"Authorization": "Bearer "})


def test_tokens_are_refused_when_no_secret_is_set():
    keys_only = Authenticator(enabled=True, api_keys=KEYS)
    assert "no JWT secret" in refused(keys_only, bearer(token()))


def test_audience_and_issuer_are_checked_when_configured():
    strict = Authenticator(
        enabled=True, jwt_secret=SECRET, jwt_audience="tasklab", jwt_issuer="https://idp"
    )
    good = token(aud="tasklab", iss="https://idp")
    assert strict.authenticate(bearer(good)).name == "jwt:alice"
    assert "audience" in refused(strict, bearer(token(aud="other", iss="https://idp")))
    assert "issuer" in refused(strict, bearer(token(aud="tasklab", iss="https://evil")))


def test_with_auth_off_every_caller_is_the_anonymous_admin():
    off = Authenticator(enabled=False, api_keys=KEYS, jwt_secret=SECRET)
    assert off.authenticate({}) is ANONYMOUS
    assert off.authenticate({"X-API-Key": "garbage"}) is ANONYMOUS


def test_every_task_service_method_needs_a_role_reads_read_and_commands_write():
    methods = {m.name for m in pb.DESCRIPTOR.services_by_name["TaskService"].methods}
    assert methods == set(METHOD_ROLES), "a method without a decided role would need Admin"
    for name in ("GetTaskInfo", "List", "Watch"):
        assert required_role(TASK_SERVICE_PREFIX + name) is Role.TASK_READ
    for name in ("Submit", "Cancel", "Retry"):
        assert required_role(TASK_SERVICE_PREFIX + name) is Role.TASK_WRITE
    assert required_role(TASK_SERVICE_PREFIX + "Purge") is Role.ADMIN
    assert required_role("/grpc.health.v1.Health/Check") is None
    assert required_role("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo") is None


def test_the_credential_passed_on_to_the_providers_is_the_one_auth_decides_by():
    both = {"Authorization": "Bearer t.o.k", "X-API-Key": "k-1"}
    assert credential_metadata(both) == [("x-api-key", "k-1")]
    assert credential_metadata({"Authorization": "Bearer t.o.k"}) == [
        ("authorization", "Bearer t.o.k")
    ]
    assert credential_metadata({"Accept": "*/*"}) == []


def test_a_credential_grpc_metadata_cannot_carry_is_not_passed_on():
    assert credential_metadata({"X-API-Key": "k\u00e9y"}) == []
    assert credential_metadata({"Authorization": "Bearer \x00"}) == []
    assert credential_metadata({"X-API-Key": ""}) == []
