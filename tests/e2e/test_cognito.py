"""User pools through Cognito's own clients: boto3 and the aws CLI for the whole flow (pool and
client, sign-up, confirmation, sign-in, refresh, password change, sign-out), the JavaScript SDK
from a function, Lambda triggers, tokens checked by their published keys and by an HTTP API's
JWT authorizer in front of a function that writes to a table; Cognito's exceptions for bad
input."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import time
from urllib.parse import urlsplit

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config

import e2e_support as s
import process_support as p
from conftest import UNSIGNED
from test_auth import cli, client
from test_iam import admin

PASSWORD = "Corr3ct-Horse!"


@pytest.fixture(scope="module")
def idp(node):
    return client(node, "cognito-idp", s.ACCESS_KEY, s.SECRET_KEY)


def fails(fn, code, message=None):
    with pytest.raises(botocore.exceptions.ClientError) as e:
        fn()
    err = e.value.response["Error"]
    assert err["Code"] == code, e.value.response
    if message is not None:
        assert message in err["Message"], err["Message"]
    return err


def new_pool(idp, **extra) -> str:
    params = {"PoolName": s.unique_name("users"), "AutoVerifiedAttributes": ["email"]}
    params.update(extra)
    return idp.create_user_pool(**params)["UserPool"]["Id"]


def new_client(idp, pool: str, **extra) -> dict:
    params = {"UserPoolId": pool, "ClientName": "app",
              "ExplicitAuthFlows": ["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH",
                                    "ALLOW_ADMIN_USER_PASSWORD_AUTH"]}
    params.update(extra)
    return idp.create_user_pool_client(**params)["UserPoolClient"]


def secret_hash(c: dict, username: str) -> str:
    mac = hmac.new(c["ClientSecret"].encode(), (username + c["ClientId"]).encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


def codes(node, pool: str, username: str) -> dict:
    """A user's outstanding codes, from the operator's API (signed by the test hook)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        conn.request("GET", f"/nimbus/v1/user-pools/{pool}/users/{username}/codes")
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200, body
        return json.loads(body)
    finally:
        conn.close()


def unsigned_get(node, path: str):
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        conn.request("GET", path, headers={UNSIGNED: "1"})
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims(token: str) -> dict:
    return json.loads(unb64u(token.split(".")[1]))


def rs256_valid(token: str, jwks: dict) -> bool:
    """Checks an RS256 signature with nothing but the key set: RSASSA-PKCS1-v1_5 over SHA-256."""
    head, body, sig = token.split(".")
    header = json.loads(unb64u(head))
    key = next((k for k in jwks["keys"] if k["kid"] == header["kid"]), None)
    if key is None or header["alg"] != "RS256":
        return False
    n = int.from_bytes(unb64u(key["n"]), "big")
    e = int.from_bytes(unb64u(key["e"]), "big")
    size = (n.bit_length() + 7) // 8
    em = pow(int.from_bytes(unb64u(sig), "big"), e, n).to_bytes(size, "big")
    digest_info = bytes.fromhex("3031300d060960864801650304020105000420")
    digest = hashlib.sha256(f"{head}.{body}".encode()).digest()
    expected = b"\x00\x01" + b"\xff" * (size - 3 - len(digest_info) - 32) + b"\x00" + digest_info + digest
    return em == expected


def sign_up_and_confirm(idp, node, pool, c, username, email, password=PASSWORD):
    extra = {"SecretHash": secret_hash(c, username)} if "ClientSecret" in c else {}
    out = idp.sign_up(ClientId=c["ClientId"], Username=username, Password=password,
                      UserAttributes=[{"Name": "email", "Value": email}], **extra)
    code = codes(node, pool, username)["signUp"]["code"]
    idp.confirm_sign_up(ClientId=c["ClientId"], Username=username, ConfirmationCode=code, **extra)
    return out


def sign_in(idp, c, username, password=PASSWORD):
    params = {"USERNAME": username, "PASSWORD": password}
    if "ClientSecret" in c:
        params["SECRET_HASH"] = secret_hash(c, username)
    return idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="USER_PASSWORD_AUTH", AuthParameters=params)


def test_the_whole_flow_through_boto3(idp, node):
    pool = new_pool(idp, Policies={"PasswordPolicy": {"MinimumLength": 10, "RequireSymbols": False}},
                    Schema=[{"Name": "plan", "AttributeDataType": "String", "Mutable": True}])
    described = idp.describe_user_pool(UserPoolId=pool)["UserPool"]
    assert described["Id"] == pool and described["Arn"].endswith(f":userpool/{pool}")
    assert described["Policies"]["PasswordPolicy"]["MinimumLength"] == 10
    assert any(a["Name"] == "custom:plan" for a in described["SchemaAttributes"])
    assert any(p_["Id"] == pool for p_ in idp.list_user_pools(MaxResults=60)["UserPools"])
    c = new_client(idp, pool, GenerateSecret=True)
    assert len(c["ClientId"]) == 26 and c["ClientSecret"]
    assert idp.describe_user_pool_client(UserPoolId=pool, ClientId=c["ClientId"])["UserPoolClient"]["ClientSecret"] == c["ClientSecret"]

    signed_up = idp.sign_up(ClientId=c["ClientId"], SecretHash=secret_hash(c, "ada"), Username="ada",
                            Password=PASSWORD, UserAttributes=[{"Name": "email", "Value": "ada@example.com"},
                                                               {"Name": "custom:plan", "Value": "pro"}])
    assert signed_up["UserConfirmed"] is False
    assert signed_up["CodeDeliveryDetails"] == {"Destination": "a***@e***", "DeliveryMedium": "EMAIL",
                                                "AttributeName": "email"}
    # Not confirmed yet: the right password is not enough.
    fails(lambda: sign_in(idp, c, "ada"), "UserNotConfirmedException")
    first = codes(node, pool, "ada")["signUp"]["code"]
    idp.resend_confirmation_code(ClientId=c["ClientId"], Username="ada", SecretHash=secret_hash(c, "ada"))
    code = codes(node, pool, "ada")["signUp"]["code"]
    assert len(code) == 6 and code.isdigit()
    if first != code:
        fails(lambda: idp.confirm_sign_up(ClientId=c["ClientId"], Username="ada", ConfirmationCode=first,
                                          SecretHash=secret_hash(c, "ada")), "CodeMismatchException")
    idp.confirm_sign_up(ClientId=c["ClientId"], Username="ada", ConfirmationCode=code,
                        SecretHash=secret_hash(c, "ada"))
    user = idp.admin_get_user(UserPoolId=pool, Username="ada")
    attrs = {a["Name"]: a["Value"] for a in user["UserAttributes"]}
    assert user["UserStatus"] == "CONFIRMED" and attrs["email_verified"] == "true"
    assert attrs["custom:plan"] == "pro" and attrs["sub"] == signed_up["UserSub"]

    result = sign_in(idp, c, "ada")["AuthenticationResult"]
    assert result["TokenType"] == "Bearer" and result["ExpiresIn"] == 3600
    id_claims, access_claims = claims(result["IdToken"]), claims(result["AccessToken"])
    issuer = f"{node.endpoint}/{pool}"
    assert id_claims["iss"] == issuer and id_claims["aud"] == c["ClientId"]
    assert id_claims["token_use"] == "id" and id_claims["cognito:username"] == "ada"
    assert id_claims["email"] == "ada@example.com" and id_claims["email_verified"] is True
    assert id_claims["sub"] == signed_up["UserSub"] and id_claims["exp"] - id_claims["iat"] == 3600
    assert access_claims["token_use"] == "access" and access_claims["client_id"] == c["ClientId"]
    assert access_claims["username"] == "ada" and access_claims["scope"] == "aws.cognito.signin.user.admin"
    assert json.loads(unb64u(result["IdToken"].split(".")[0]))["alg"] == "RS256"

    me = idp.get_user(AccessToken=result["AccessToken"])
    assert me["Username"] == "ada"
    idp.update_user_attributes(AccessToken=result["AccessToken"],
                               UserAttributes=[{"Name": "custom:plan", "Value": "team"}])
    me = idp.get_user(AccessToken=result["AccessToken"])
    assert {a["Name"]: a["Value"] for a in me["UserAttributes"]}["custom:plan"] == "team"

    refreshed = idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="REFRESH_TOKEN_AUTH", AuthParameters={
        "REFRESH_TOKEN": result["RefreshToken"], "SECRET_HASH": secret_hash(c, "ada")})["AuthenticationResult"]
    assert "RefreshToken" not in refreshed
    assert claims(refreshed["IdToken"])["origin_jti"] == id_claims["origin_jti"]
    assert claims(refreshed["IdToken"])["auth_time"] == id_claims["auth_time"]

    idp.change_password(PreviousPassword=PASSWORD, ProposedPassword="An0ther-Horse", AccessToken=result["AccessToken"])
    fails(lambda: sign_in(idp, c, "ada"), "NotAuthorizedException", "Incorrect username or password.")
    second = sign_in(idp, c, "ada", "An0ther-Horse")["AuthenticationResult"]

    # Forgotten password: a code to the verified address, then a new password.
    sent = idp.forgot_password(ClientId=c["ClientId"], Username="ada", SecretHash=secret_hash(c, "ada"))
    assert sent["CodeDeliveryDetails"]["AttributeName"] == "email"
    reset = codes(node, pool, "ada")["passwordReset"]["code"]
    fails(lambda: idp.confirm_forgot_password(ClientId=c["ClientId"], Username="ada", SecretHash=secret_hash(c, "ada"),
                                              ConfirmationCode=reset, Password="short"), "InvalidPasswordException")
    idp.confirm_forgot_password(ClientId=c["ClientId"], Username="ada", SecretHash=secret_hash(c, "ada"),
                                ConfirmationCode=reset, Password="Th1rd-Horse-x")
    sign_in(idp, c, "ada", "Th1rd-Horse-x")

    # Signing out ends every session: refresh tokens stop working, access tokens are refused.
    idp.global_sign_out(AccessToken=second["AccessToken"])
    for token in (result["RefreshToken"], second["RefreshToken"]):
        fails(lambda: idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="REFRESH_TOKEN_AUTH", AuthParameters={
            "REFRESH_TOKEN": token, "SECRET_HASH": secret_hash(c, "ada")}),
            "NotAuthorizedException", "Refresh Token has been revoked")
    fails(lambda: idp.get_user(AccessToken=second["AccessToken"]), "NotAuthorizedException",
          "Access Token has been revoked")

    # An administrator changes an attribute: a new address is unverified and gets a code.
    idp.admin_update_user_attributes(UserPoolId=pool, Username="ada", UserAttributes=[
        {"Name": "email", "Value": "ada@example.net"}, {"Name": "custom:plan", "Value": "free"}])
    attrs = {a["Name"]: a["Value"] for a in idp.admin_get_user(UserPoolId=pool, Username="ada")["UserAttributes"]}
    assert attrs["email"] == "ada@example.net" and attrs["email_verified"] == "false" and attrs["custom:plan"] == "free"
    assert codes(node, pool, "ada")["attributes"]["email"]["code"]
    fails(lambda: idp.admin_update_user_attributes(UserPoolId=pool, Username="ada", UserAttributes=[
        {"Name": "custom:nosuch", "Value": "x"}]), "InvalidParameterException")

    # Administrators: list with a filter, disable, delete.
    idp.admin_create_user(UserPoolId=pool, Username="bob", MessageAction="SUPPRESS",
                          UserAttributes=[{"Name": "email", "Value": "bob@example.org"}])
    listed = idp.list_users(UserPoolId=pool, Filter='email ^= "bob@"')["Users"]
    assert [u["Username"] for u in listed] == ["bob"] and listed[0]["UserStatus"] == "FORCE_CHANGE_PASSWORD"
    assert len(idp.list_users(UserPoolId=pool)["Users"]) == 2
    pages = idp.get_paginator("list_users").paginate(UserPoolId=pool, PaginationConfig={"PageSize": 1})
    assert sorted(u["Username"] for page in pages for u in page["Users"]) == ["ada", "bob"]
    idp.admin_disable_user(UserPoolId=pool, Username="ada")
    fails(lambda: sign_in(idp, c, "ada", "Th1rd-Horse-x"), "NotAuthorizedException", "User is disabled.")
    idp.admin_enable_user(UserPoolId=pool, Username="ada")
    sign_in(idp, c, "ada", "Th1rd-Horse-x")
    idp.admin_delete_user(UserPoolId=pool, Username="ada")
    fails(lambda: idp.admin_get_user(UserPoolId=pool, Username="ada"), "UserNotFoundException")
    fails(lambda: sign_in(idp, c, "ada", "Th1rd-Horse-x"), "NotAuthorizedException", "Incorrect username or password.")
    idp.delete_user_pool_client(UserPoolId=pool, ClientId=c["ClientId"])
    idp.delete_user_pool(UserPoolId=pool)
    fails(lambda: idp.describe_user_pool(UserPoolId=pool), "ResourceNotFoundException")


def test_admin_created_users_and_groups_through_the_cli(node, tmp_path):
    def aws(*args):
        out = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "cognito-idp", *args)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else None

    pool = aws("create-user-pool", "--pool-name", s.unique_name("cli"), "--username-attributes", "email",
               "--auto-verified-attributes", "email")["UserPool"]["Id"]
    c = aws("create-user-pool-client", "--user-pool-id", pool, "--client-name", "web",
            "--explicit-auth-flows", "ALLOW_USER_PASSWORD_AUTH", "ALLOW_ADMIN_USER_PASSWORD_AUTH",
            "ALLOW_REFRESH_TOKEN_AUTH")["UserPoolClient"]
    created = aws("admin-create-user", "--user-pool-id", pool, "--username", "grace@example.com",
                  "--temporary-password", "Temp-Pass1!", "--message-action", "SUPPRESS")["User"]
    # Users of an e-mail pool are named by their sub; the address signs in.
    attrs = {a["Name"]: a["Value"] for a in created["Attributes"]}
    assert created["Username"] == attrs["sub"] and attrs["email"] == "grace@example.com"
    assert created["UserStatus"] == "FORCE_CHANGE_PASSWORD"
    aws("create-group", "--user-pool-id", pool, "--group-name", "admins", "--precedence", "1")
    aws("admin-add-user-to-group", "--user-pool-id", pool, "--username", "grace@example.com", "--group-name", "admins")
    assert [g["GroupName"] for g in aws("admin-list-groups-for-user", "--user-pool-id", pool,
                                        "--username", "grace@example.com")["Groups"]] == ["admins"]
    challenge = aws("admin-initiate-auth", "--user-pool-id", pool, "--client-id", c["ClientId"],
                    "--auth-flow", "ADMIN_USER_PASSWORD_AUTH",
                    "--auth-parameters", "USERNAME=grace@example.com,PASSWORD=Temp-Pass1!")
    assert challenge["ChallengeName"] == "NEW_PASSWORD_REQUIRED" and challenge["Session"]
    assert json.loads(challenge["ChallengeParameters"]["userAttributes"])["email"] == "grace@example.com"
    # The user's own RespondToAuthChallenge refuses a weak password and a made-up session.
    fails_cli = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "cognito-idp", "respond-to-auth-challenge",
                    "--client-id", c["ClientId"], "--challenge-name", "NEW_PASSWORD_REQUIRED",
                    "--session", challenge["Session"],
                    "--challenge-responses", "USERNAME=grace@example.com,NEW_PASSWORD=weak")
    assert fails_cli.returncode != 0 and "InvalidPasswordException" in fails_cli.stderr
    forged = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "cognito-idp", "respond-to-auth-challenge",
                 "--client-id", c["ClientId"], "--challenge-name", "NEW_PASSWORD_REQUIRED",
                 "--session", challenge["Session"][:-6] + "AAAAAA",
                 "--challenge-responses", "USERNAME=grace@example.com,NEW_PASSWORD=Perm-Pass1!")
    assert forged.returncode != 0 and "NotAuthorizedException" in forged.stderr
    answered = aws("admin-respond-to-auth-challenge", "--user-pool-id", pool, "--client-id", c["ClientId"],
                   "--challenge-name", "NEW_PASSWORD_REQUIRED", "--session", challenge["Session"],
                   "--challenge-responses", "USERNAME=grace@example.com,NEW_PASSWORD=Perm-Pass1!")
    id_claims = claims(answered["AuthenticationResult"]["IdToken"])
    assert id_claims["cognito:groups"] == ["admins"] and id_claims["email"] == "grace@example.com"
    # The user calls need no credentials: the CLI sends them unsigned.
    signed_in = aws("initiate-auth", "--client-id", c["ClientId"], "--auth-flow", "USER_PASSWORD_AUTH",
                    "--auth-parameters", "USERNAME=GRACE@example.com,PASSWORD=Perm-Pass1!")
    access = signed_in["AuthenticationResult"]["AccessToken"]
    assert aws("get-user", "--access-token", access)["Username"] == created["Username"]
    aws("global-sign-out", "--access-token", access)
    users = aws("list-users", "--user-pool-id", pool, "--filter", 'status = "Enabled"')["Users"]
    assert [u["UserStatus"] for u in users] == ["CONFIRMED"]
    in_group = aws("list-users-in-group", "--user-pool-id", pool, "--group-name", "admins")["Users"]
    assert [u["Username"] for u in in_group] == [created["Username"]]
    # Sign-up, confirmation, refresh, a password change and sign-out, all from the CLI.
    c2 = aws("create-user-pool-client", "--user-pool-id", pool, "--client-name", "app",
             "--explicit-auth-flows", "ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH")["UserPoolClient"]
    up = aws("sign-up", "--client-id", c2["ClientId"], "--username", "lin@example.com", "--password", PASSWORD)
    assert up["UserConfirmed"] is False
    code = codes(node, pool, "lin@example.com")["signUp"]["code"]
    aws("confirm-sign-up", "--client-id", c2["ClientId"], "--username", "lin@example.com",
        "--confirmation-code", code)
    lin = aws("initiate-auth", "--client-id", c2["ClientId"], "--auth-flow", "USER_PASSWORD_AUTH",
              "--auth-parameters", f"USERNAME=lin@example.com,PASSWORD={PASSWORD}")["AuthenticationResult"]
    refresh = ["initiate-auth", "--client-id", c2["ClientId"], "--auth-flow", "REFRESH_TOKEN_AUTH",
               "--auth-parameters", f"REFRESH_TOKEN={lin['RefreshToken']}"]
    assert claims(aws(*refresh)["AuthenticationResult"]["IdToken"])["sub"] == up["UserSub"]
    aws("change-password", "--previous-password", PASSWORD, "--proposed-password", "Fresh-Pass9!",
        "--access-token", lin["AccessToken"])
    aws("initiate-auth", "--client-id", c2["ClientId"], "--auth-flow", "USER_PASSWORD_AUTH",
        "--auth-parameters", "USERNAME=lin@example.com,PASSWORD=Fresh-Pass9!")
    aws("global-sign-out", "--access-token", lin["AccessToken"])
    stale = cli(node, tmp_path, s.ACCESS_KEY, s.SECRET_KEY, "cognito-idp", *refresh)
    assert stale.returncode != 0 and "NotAuthorizedException" in stale.stderr
    aws("delete-group", "--user-pool-id", pool, "--group-name", "admins")
    assert aws("admin-list-groups-for-user", "--user-pool-id", pool, "--username", "grace@example.com")["Groups"] == []
    aws("delete-user-pool", "--user-pool-id", pool)


def test_published_keys_verify_tokens_and_rotate(idp, node):
    pool = new_pool(idp)
    c = new_client(idp, pool)
    sign_up_and_confirm(idp, node, pool, c, "kim", "kim@example.com")
    token = sign_in(idp, c, "kim")["AuthenticationResult"]["IdToken"]
    status, discovery = unsigned_get(node, f"/{pool}/.well-known/openid-configuration")
    assert status == 200 and discovery["issuer"] == f"{node.endpoint}/{pool}"
    assert discovery["jwks_uri"] == f"{node.endpoint}/{pool}/.well-known/jwks.json"
    status, jwks = unsigned_get(node, urlsplit(discovery["jwks_uri"]).path)
    assert status == 200 and [k["kty"] for k in jwks["keys"]] == ["RSA"] and jwks["keys"][0]["use"] == "sig"
    assert rs256_valid(token, jwks)
    head, body, sig = token.split(".")
    forged = claims(token)
    forged["cognito:username"] = "root"
    assert not rs256_valid(f"{head}.{b64u(json.dumps(forged).encode())}.{sig}", jwks)
    assert unsigned_get(node, "/us-east-1_nosuchpool/.well-known/jwks.json")[0] == 404
    # A browser may call the API from any page: the preflight, then the answer's headers.
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    conn.request("OPTIONS", "/", headers={UNSIGNED: "1", "Origin": "http://app.example",
                                          "Access-Control-Request-Method": "POST",
                                          "Access-Control-Request-Headers": "content-type,x-amz-target,x-amz-user-agent"})
    r = conn.getresponse()
    r.read()
    assert r.status == 200 and r.getheader("access-control-allow-origin") == "*"
    assert "x-amz-target" in r.getheader("access-control-allow-headers")
    conn.request("POST", "/", body=json.dumps({"ClientId": c["ClientId"], "AuthFlow": "USER_PASSWORD_AUTH",
                                               "AuthParameters": {"USERNAME": "kim", "PASSWORD": PASSWORD}}),
                 headers={UNSIGNED: "1", "Origin": "http://app.example", "Content-Type": "application/x-amz-json-1.1",
                          "X-Amz-Target": "AWSCognitoIdentityProviderService.InitiateAuth"})
    r = conn.getresponse()
    body = json.loads(r.read())
    conn.close()
    assert r.status == 200 and "AuthenticationResult" in body
    assert r.getheader("access-control-allow-origin") == "*"
    # Rotation: a new key signs, the old one stays published for the tokens it signed.
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
    conn.request("POST", f"/nimbus/v1/user-pools/{pool}/signing-keys", body=b"")
    r = conn.getresponse()
    rotated = json.loads(r.read())
    conn.close()
    assert r.status == 200 and len(rotated["keys"]) == 2
    old_kid = json.loads(unb64u(head))["kid"]
    assert rotated["activeKid"] != old_kid
    fresh = sign_in(idp, c, "kim")["AuthenticationResult"]
    assert json.loads(unb64u(fresh["IdToken"].split(".")[0]))["kid"] == rotated["activeKid"]
    _, jwks = unsigned_get(node, f"/{pool}/.well-known/jwks.json")
    assert rs256_valid(token, jwks) and rs256_valid(fresh["IdToken"], jwks)
    idp.get_user(AccessToken=fresh["AccessToken"])


def test_bad_input_gets_cognitos_exceptions_and_changes_nothing(idp, node):
    pool = new_pool(idp)
    c = new_client(idp, pool, GenerateSecret=True)
    plain = new_client(idp, pool, ExplicitAuthFlows=["ALLOW_REFRESH_TOKEN_AUTH"])
    sh = secret_hash(c, "eve")

    def sign_up(password=PASSWORD, username="eve", **kw):
        params = dict(ClientId=c["ClientId"], Username=username, Password=password, SecretHash=sh,
                      UserAttributes=[{"Name": "email", "Value": "eve@example.com"}])
        params.update(kw)
        return idp.sign_up(**params)

    for bad, why in [("Sh0rt!a", "not long enough"), ("alllowercase1!", "uppercase"),
                     ("NoNumbers!!aa", "numeric"), ("NoSymbols123a", "symbol")]:
        fails(lambda: sign_up(bad), "InvalidPasswordException", why)
    fails(lambda: sign_up(SecretHash="d3Jvbmc="), "NotAuthorizedException",
          "Unable to verify secret hash")
    fails(lambda: idp.sign_up(ClientId=c["ClientId"], Username="eve", Password=PASSWORD),
          "NotAuthorizedException", "SECRET_HASH was not received")
    fails(lambda: sign_up(ClientId="nosuchclient0000000000000a"), "ResourceNotFoundException")
    fails(lambda: sign_up(UserAttributes=[{"Name": "favourite_colour", "Value": "x"}]), "InvalidParameterException")
    fails(lambda: sign_up(UserAttributes=[{"Name": "email", "Value": "not-an-address"}]), "InvalidParameterException")
    assert idp.list_users(UserPoolId=pool)["Users"] == []
    sign_up()
    fails(sign_up, "UsernameExistsException")
    wrong = "000000" if codes(node, pool, "eve")["signUp"]["code"] != "000000" else "111111"
    fails(lambda: idp.confirm_sign_up(ClientId=c["ClientId"], Username="eve", SecretHash=sh, ConfirmationCode=wrong),
          "CodeMismatchException")
    assert idp.admin_get_user(UserPoolId=pool, Username="eve")["UserStatus"] == "UNCONFIRMED"
    # A user that does not exist is not revealed.
    fails(lambda: idp.confirm_sign_up(ClientId=c["ClientId"], Username="nobody", SecretHash=secret_hash(c, "nobody"),
                                      ConfirmationCode="123456"), "CodeMismatchException")
    fails(lambda: sign_in(idp, c, "nobody"), "NotAuthorizedException", "Incorrect username or password.")
    code = codes(node, pool, "eve")["signUp"]["code"]
    idp.confirm_sign_up(ClientId=c["ClientId"], Username="eve", SecretHash=sh, ConfirmationCode=code)
    fails(lambda: idp.confirm_sign_up(ClientId=c["ClientId"], Username="eve", SecretHash=sh, ConfirmationCode=code),
          "NotAuthorizedException", "Current status is CONFIRMED")
    # Wrong codes count towards the user's lockout, however many fresh codes are asked for.
    idp.sign_up(ClientId=c["ClientId"], Username="gus", Password=PASSWORD, SecretHash=secret_hash(c, "gus"),
                UserAttributes=[{"Name": "email", "Value": "gus@example.com"}])
    real = codes(node, pool, "gus")["signUp"]["code"]
    wrong = "000000" if real != "000000" else "111111"
    for _ in range(5):
        fails(lambda: idp.confirm_sign_up(ClientId=c["ClientId"], Username="gus", SecretHash=secret_hash(c, "gus"),
                                          ConfirmationCode=wrong), "CodeMismatchException")
    fails(lambda: idp.confirm_sign_up(ClientId=c["ClientId"], Username="gus", SecretHash=secret_hash(c, "gus"),
                                      ConfirmationCode=real), "LimitExceededException")
    # In a pool where e-mail is an alias, a username may not look like an address.
    alias_pool = new_pool(idp, AliasAttributes=["email"])
    alias_client = new_client(idp, alias_pool)
    fails(lambda: idp.sign_up(ClientId=alias_client["ClientId"], Username="victim@example.com", Password=PASSWORD),
          "InvalidParameterException", "email format")
    # A flow the client does not allow.
    fails(lambda: idp.initiate_auth(ClientId=plain["ClientId"], AuthFlow="USER_PASSWORD_AUTH",
                                    AuthParameters={"USERNAME": "eve", "PASSWORD": PASSWORD}),
          "InvalidParameterException", "USER_PASSWORD_AUTH flow not enabled for this client")
    fails(lambda: idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="USER_PASSWORD_AUTH",
                                    AuthParameters={"USERNAME": "eve", "PASSWORD": PASSWORD, "SECRET_HASH": "d3Jvbmc="}),
          "NotAuthorizedException", "Unable to verify secret hash")
    good = sign_in(idp, c, "eve")["AuthenticationResult"]
    # Tokens: tampered, made up, of another pool.
    head, body, sig = good["AccessToken"].split(".")
    forged = claims(good["AccessToken"])
    forged["username"] = "admin"
    for bad in [f"{head}.{b64u(json.dumps(forged).encode())}.{sig}", f"{head}.{body}.{sig[:-4]}AAAA",
                "not.a.token", good["IdToken"]]:
        fails(lambda: idp.get_user(AccessToken=bad), "NotAuthorizedException")
    other_pool = new_pool(idp)
    other_client = new_client(idp, other_pool)
    sign_up_and_confirm(idp, node, other_pool, other_client, "eve", "eve@example.com")
    theirs = sign_in(idp, other_client, "eve")["AuthenticationResult"]
    t_head, t_body, t_sig = theirs["AccessToken"].split(".")
    moved = claims(theirs["AccessToken"])
    moved["iss"] = f"{node.endpoint}/{pool}"
    fails(lambda: idp.get_user(AccessToken=f"{t_head}.{b64u(json.dumps(moved).encode())}.{t_sig}"),
          "NotAuthorizedException")
    fails(lambda: idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="REFRESH_TOKEN_AUTH", AuthParameters={
        "REFRESH_TOKEN": theirs["RefreshToken"], "SECRET_HASH": sh}), "NotAuthorizedException")
    # A disabled user: no sign-in, no refresh.
    idp.admin_disable_user(UserPoolId=pool, Username="eve")
    fails(lambda: sign_in(idp, c, "eve"), "NotAuthorizedException", "User is disabled.")
    fails(lambda: idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="REFRESH_TOKEN_AUTH", AuthParameters={
        "REFRESH_TOKEN": good["RefreshToken"], "SECRET_HASH": sh}), "NotAuthorizedException", "User is disabled.")
    idp.admin_enable_user(UserPoolId=pool, Username="eve")
    # Bad pool and client settings (sent past botocore's own checks).
    unchecked = boto3.session.Session(
        aws_access_key_id=s.ACCESS_KEY, aws_secret_access_key=s.SECRET_KEY, region_name=s.REGION
    ).client("cognito-idp", endpoint_url=node.endpoint, config=Config(parameter_validation=False))
    fails(lambda: unchecked.create_user_pool(PoolName="x", Policies={"PasswordPolicy": {"MinimumLength": 3}}),
          "InvalidParameterException")
    fails(lambda: unchecked.create_user_pool(PoolName="bad name!"), "InvalidParameterException")
    fails(lambda: unchecked.sign_up(ClientId=c["ClientId"], SecretHash=secret_hash(c, "has space"),
                                    Username="has space", Password=PASSWORD), "InvalidParameterException")
    fails(lambda: idp.create_user_pool(PoolName="x", UsernameAttributes=["email"], AliasAttributes=["email"]),
          "InvalidParameterException")
    fails(lambda: idp.create_user_pool(PoolName="x", LambdaConfig={"CustomMessage": f"arn:aws:lambda:{s.REGION}:000000000000:function:f"}),
          "InvalidParameterException")
    fails(lambda: new_client(idp, pool, AccessTokenValidity=2, TokenValidityUnits={"AccessToken": "days"}),
          "InvalidParameterException")
    fails(lambda: new_client(idp, pool, ExplicitAuthFlows=["USER_PASSWORD_AUTH", "ALLOW_USER_SRP_AUTH"]),
          "InvalidParameterException")
    fails(lambda: idp.list_users(UserPoolId=pool, Filter="email contains x"), "InvalidParameterException")
    # Administrators' calls need credentials; users' calls do not.
    anonymous = client(node, "cognito-idp", "NKIAUNKNOWNKEY000001", s.SECRET_KEY)
    fails(lambda: anonymous.list_users(UserPoolId=pool), "UnrecognizedClientException")
    fails(lambda: anonymous.initiate_auth(ClientId=plain["ClientId"], AuthFlow="REFRESH_TOKEN_AUTH",
                                          AuthParameters={"REFRESH_TOKEN": "x"}),
          "NotAuthorizedException", "Invalid Refresh Token")


def test_codes_expire_and_guessing_is_limited(node_factory, tmp_path):
    config = tmp_path / "short-codes.toml"
    config.write_text("[user_pools]\ncode_validity_secs = 2\nsource_rate = 5.0\nsource_burst = 40.0\n")
    node = node_factory(config=config, name="codes")
    idp = client(node, "cognito-idp", s.ACCESS_KEY, s.SECRET_KEY)
    pool = new_pool(idp)
    c = new_client(idp, pool)
    idp.sign_up(ClientId=c["ClientId"], Username="max", Password=PASSWORD,
                UserAttributes=[{"Name": "email", "Value": "max@example.com"}])
    code = codes(node, pool, "max")["signUp"]["code"]
    time.sleep(2.5)
    fails(lambda: idp.confirm_sign_up(ClientId=c["ClientId"], Username="max", ConfirmationCode=code),
          "ExpiredCodeException")
    idp.resend_confirmation_code(ClientId=c["ClientId"], Username="max")
    idp.confirm_sign_up(ClientId=c["ClientId"], Username="max",
                        ConfirmationCode=codes(node, pool, "max")["signUp"]["code"])
    # Five wrong passwords, then a lockout even for the right one.
    for _ in range(5):
        fails(lambda: sign_in(idp, c, "max", "Wrong-Horse1!"), "NotAuthorizedException",
              "Incorrect username or password.")
    fails(lambda: sign_in(idp, c, "max"), "NotAuthorizedException", "Password attempts exceeded")
    time.sleep(1.2)
    sign_in(idp, c, "max")
    # One source trying too often is slowed down.
    seen = set()
    for _ in range(60):
        try:
            sign_in(idp, c, "nobody", "Wrong-Horse1!")
        except botocore.exceptions.ClientError as e:
            seen.add(e.response["Error"]["Code"])
            if e.response["Error"]["Code"] == "TooManyRequestsException":
                break
    assert "TooManyRequestsException" in seen, seen


def test_lambda_triggers_run_with_cognitos_events(idp, node, lambda_client):
    iam = admin(node, "iam")
    ddb = client(node, "dynamodb", s.ACCESS_KEY, s.SECRET_KEY)
    audit = s.unique_name("audit")
    ddb.create_table(TableName=audit, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                           {"AttributeName": "sk", "AttributeType": "S"}])
    role = iam.create_role(RoleName=s.unique_name("trig"), AssumeRolePolicyDocument=s.LAMBDA_TRUST)["Role"]
    iam.put_role_policy(RoleName=role["RoleName"], PolicyName="audit", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:PutItem",
                                                "Resource": f"arn:aws:dynamodb:{s.REGION}:000000000000:table/{audit}"}]}))
    fn = p.deploy(lambda_client, "python-aws", p.host_python_runtime(), "cognito.trigger", Role=role["Arn"],
                  Timeout=5, Environment={"Variables": {"AUDIT_TABLE": audit}})
    arn = f"arn:aws:lambda:{s.REGION}:000000000000:function:{fn}"
    pool = new_pool(idp, LambdaConfig={name: arn for name in
                                       ["PreSignUp", "PostConfirmation", "PreTokenGeneration", "PostAuthentication"]})
    c = new_client(idp, pool)
    # PreSignUp auto-confirms and verifies this domain, refuses another.
    auto = idp.sign_up(ClientId=c["ClientId"], Username="ann", Password=PASSWORD,
                       UserAttributes=[{"Name": "email", "Value": "ann@auto.example"},
                                       {"Name": "nickname", "Value": "annie"}])
    assert auto["UserConfirmed"] is True and "CodeDeliveryDetails" not in auto
    fails(lambda: idp.sign_up(ClientId=c["ClientId"], Username="bad", Password=PASSWORD,
                              UserAttributes=[{"Name": "email", "Value": "x@blocked.example"}]),
          "UserLambdaValidationException", "PreSignUp failed with error sign-ups from blocked.example are closed.")
    fails(lambda: idp.admin_get_user(UserPoolId=pool, Username="bad"), "UserNotFoundException")
    sign_up_and_confirm(idp, node, pool, c, "ben", "ben@example.com")
    tokens = sign_in(idp, c, "ann")["AuthenticationResult"]
    id_claims = claims(tokens["IdToken"])
    # PreTokenGeneration added and suppressed claims and changed the groups; iss is not its to change.
    assert id_claims["tier"] == "gold" and id_claims["generated_by"] == "TokenGeneration_Authentication"
    assert "nickname" not in id_claims and id_claims["email_verified"] is True
    assert id_claims["cognito:groups"] == ["from-trigger"] and id_claims["iss"] == f"{node.endpoint}/{pool}"
    items = ddb.scan(TableName=audit)["Items"]
    seen = {(i["pk"]["S"], i["sk"]["S"]) for i in items}
    ann = idp.admin_get_user(UserPoolId=pool, Username="ann")["Username"]
    assert {(ann, "PreSignUp_SignUp"), (ann, "TokenGeneration_Authentication"),
            (ann, "PostAuthentication_Authentication"), ("ben", "PreSignUp_SignUp"),
            ("ben", "PostConfirmation_ConfirmSignUp")} <= seen, seen
    post = next(i for i in items if i["sk"]["S"] == "PostConfirmation_ConfirmSignUp")
    assert post["pool"]["S"] == pool and post["client"]["S"] == c["ClientId"] and post["status"]["S"] == "CONFIRMED"
    # A trigger that fails refuses the sign-in.
    lambda_client.delete_function(FunctionName=fn)
    fails(lambda: sign_in(idp, c, "ann"), "UserLambdaValidationException")


def test_the_javascript_sdk_from_a_function(idp, node, lambda_client):
    iam = admin(node, "iam")
    pool = new_pool(idp)
    c = new_client(idp, pool)
    role = iam.create_role(RoleName=s.unique_name("idp"), AssumeRolePolicyDocument=s.LAMBDA_TRUST)["Role"]
    iam.put_role_policy(RoleName=role["RoleName"], PolicyName="confirm", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "cognito-idp:AdminConfirmSignUp",
                                                "Resource": f"arn:aws:cognito-idp:{s.REGION}:000000000000:userpool/{pool}"}]}))
    fn = p.deploy(lambda_client, "node-aws", p.host_node_runtime(), "cognito.handler", Role=role["Arn"], Timeout=30)
    out = s.invoke(lambda_client, fn, {"clientId": c["ClientId"], "poolId": pool, "username": "js-user",
                                       "password": PASSWORD, "email": "js@example.com"})
    assert out.function_error is None, out.payload
    result = out.json()
    assert result["confirmed"] is False and result["username"] == "js-user"
    assert result["email"] == "js@example.com" and result["expiresIn"] == 3600 and result["hasRefresh"]
    assert result["wrong"] == "NotAuthorizedException: Incorrect username or password."
    assert idp.admin_get_user(UserPoolId=pool, Username="js-user")["UserStatus"] == "CONFIRMED"


def test_an_application_signs_users_in_and_its_api_checks_their_tokens(idp, node, lambda_client):
    iam = admin(node, "iam")
    ddb = client(node, "dynamodb", s.ACCESS_KEY, s.SECRET_KEY)
    apigw = client(node, "apigatewayv2", s.ACCESS_KEY, s.SECRET_KEY)
    notes = s.unique_name("notes")
    ddb.create_table(TableName=notes, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
    role = iam.create_role(RoleName=s.unique_name("notes"), AssumeRolePolicyDocument=s.LAMBDA_TRUST)["Role"]
    iam.put_role_policy(RoleName=role["RoleName"], PolicyName="notes", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "dynamodb:PutItem",
                                                "Resource": f"arn:aws:dynamodb:{s.REGION}:000000000000:table/{notes}"}]}))
    fn = p.deploy(lambda_client, "python-aws", p.host_python_runtime(), "cognito.api", Role=role["Arn"],
                  Timeout=30, Environment={"Variables": {"NOTES_TABLE": notes}})
    pool = new_pool(idp)
    c = new_client(idp, pool)
    issuer = f"{node.endpoint}/{pool}"
    api = apigw.create_api(Name=s.unique_name("notes"), ProtocolType="HTTP")
    host = urlsplit(api["ApiEndpoint"]).netloc
    integration = apigw.create_integration(
        ApiId=api["ApiId"], IntegrationType="AWS_PROXY", PayloadFormatVersion="2.0",
        IntegrationUri=f"arn:aws:lambda:{s.REGION}:000000000000:function:{fn}")["IntegrationId"]
    authorizer = apigw.create_authorizer(
        ApiId=api["ApiId"], Name="users", AuthorizerType="JWT", IdentitySource=["$request.header.Authorization"],
        JwtConfiguration={"Issuer": issuer, "Audience": [c["ClientId"]]})["AuthorizerId"]
    apigw.create_route(ApiId=api["ApiId"], RouteKey="POST /notes", Target=f"integrations/{integration}",
                       AuthorizationType="JWT", AuthorizerId=authorizer)
    apigw.create_stage(ApiId=api["ApiId"], StageName="$default", AutoDeploy=True)

    def post(token, text="hello"):
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=60)
        try:
            headers = {"Host": host, UNSIGNED: "1", "content-type": "application/json"}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            conn.request("POST", "/notes", body=json.dumps({"text": text}).encode(), headers=headers)
            r = conn.getresponse()
            return r.status, json.loads(r.read() or b"null")
        finally:
            conn.close()

    signed_up = sign_up_and_confirm(idp, node, pool, c, "lin", "lin@example.com")
    tokens = sign_in(idp, c, "lin")["AuthenticationResult"]
    status, body = post(tokens["IdToken"], "first note")
    assert status == 200, body
    assert body == {"sub": signed_up["UserSub"], "saved": "first note", "token_use": "id"}
    # An access token names the client in client_id: accepted as well.
    assert post(tokens["AccessToken"], "second")[0] == 200
    stored = ddb.get_item(TableName=notes, Key={"pk": {"S": signed_up["UserSub"]}})["Item"]
    assert stored["text"]["S"] == "second" and stored["username"]["S"] == "lin"
    assert post(None) == (401, {"message": "Unauthorized"})
    head, body_, sig = tokens["IdToken"].split(".")
    forged = claims(tokens["IdToken"])
    forged["sub"] = "someone-else"
    assert post(f"{head}.{b64u(json.dumps(forged).encode())}.{sig}")[0] == 401
    other_pool = new_pool(idp)
    other_client = new_client(idp, other_pool)
    sign_up_and_confirm(idp, node, other_pool, other_client, "lin", "lin@example.com")
    assert post(sign_in(idp, other_client, "lin")["AuthenticationResult"]["IdToken"])[0] == 401
    assert ddb.scan(TableName=notes)["Count"] == 1
    # Signed out: the refresh token no longer gets new tokens.
    idp.global_sign_out(AccessToken=tokens["AccessToken"])
    fails(lambda: idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="REFRESH_TOKEN_AUTH",
                                    AuthParameters={"REFRESH_TOKEN": tokens["RefreshToken"]}),
          "NotAuthorizedException", "Refresh Token has been revoked")


def test_srp_sign_in_as_cognitos_client_libraries_do_it(idp, node):
    """USER_SRP_AUTH and the PASSWORD_VERIFIER challenge, driven by pycognito's AWSSRP (the
    protocol of amazon-cognito-identity-js and Amplify): the password never leaves the client."""
    from pycognito.aws_srp import AWSSRP
    from pycognito.exceptions import ForceChangePasswordException

    pool = new_pool(idp, UsernameAttributes=["email"])
    c = new_client(idp, pool, ExplicitAuthFlows=["ALLOW_USER_SRP_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"])
    signed_up = idp.sign_up(ClientId=c["ClientId"], Username="sam@example.com", Password=PASSWORD)
    idp.admin_confirm_sign_up(UserPoolId=pool, Username="sam@example.com")

    def srp(username, password, client_id=c["ClientId"]):
        return AWSSRP(username=username, password=password, pool_id=pool, client_id=client_id,
                      client=idp).authenticate_user()

    tokens = srp("sam@example.com", PASSWORD)["AuthenticationResult"]
    id_claims = claims(tokens["IdToken"])
    assert id_claims["sub"] == signed_up["UserSub"] and id_claims["cognito:username"] == signed_up["UserSub"]
    assert idp.get_user(AccessToken=tokens["AccessToken"])["Username"] == signed_up["UserSub"]
    refreshed = idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="REFRESH_TOKEN_AUTH",
                                  AuthParameters={"REFRESH_TOKEN": tokens["RefreshToken"]})
    assert claims(refreshed["AuthenticationResult"]["IdToken"])["sub"] == signed_up["UserSub"]
    # A wrong password and an unknown user fail alike.
    fails(lambda: srp("sam@example.com", "Wrong-Horse1!"), "NotAuthorizedException", "Incorrect username or password.")
    fails(lambda: srp("nobody@example.com", PASSWORD), "NotAuthorizedException", "Incorrect username or password.")
    # Asking for an unknown user twice shows the same salt, as for a real user.
    decoys = [idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="USER_SRP_AUTH",
                                AuthParameters=AWSSRP(username="ghost@example.com", password="x", pool_id=pool,
                                                      client_id=c["ClientId"], client=idp).get_auth_params())
              for _ in range(2)]
    assert decoys[0]["ChallengeParameters"]["SALT"] == decoys[1]["ChallengeParameters"]["SALT"]
    assert decoys[0]["ChallengeParameters"]["SRP_B"] != decoys[1]["ChallengeParameters"]["SRP_B"]
    # A changed password is the one SRP proves.
    idp.change_password(PreviousPassword=PASSWORD, ProposedPassword="N3w-Horse-pw", AccessToken=tokens["AccessToken"])
    fails(lambda: srp("sam@example.com", PASSWORD), "NotAuthorizedException")
    srp("sam@example.com", "N3w-Horse-pw")
    # An administrator's temporary password leads to the NEW_PASSWORD_REQUIRED challenge.
    idp.admin_create_user(UserPoolId=pool, Username="tia@example.com", TemporaryPassword="Temp-Pass1!",
                          MessageAction="SUPPRESS")
    with pytest.raises(ForceChangePasswordException):
        srp("tia@example.com", "Temp-Pass1!")
    # A secret block answered twice, or a bad A, is refused.
    flow = AWSSRP(username="sam@example.com", password="N3w-Horse-pw", pool_id=pool, client_id=c["ClientId"],
                  client=idp)
    params = flow.get_auth_params()
    started = idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="USER_SRP_AUTH", AuthParameters=params)
    assert started["ChallengeName"] == "PASSWORD_VERIFIER"
    assert started["ChallengeParameters"]["USER_ID_FOR_SRP"] == signed_up["UserSub"]
    answer = flow.process_challenge(started["ChallengeParameters"], params)
    done = idp.respond_to_auth_challenge(ClientId=c["ClientId"], ChallengeName="PASSWORD_VERIFIER",
                                         ChallengeResponses=answer)
    assert "AccessToken" in done["AuthenticationResult"]
    fails(lambda: idp.respond_to_auth_challenge(ClientId=c["ClientId"], ChallengeName="PASSWORD_VERIFIER",
                                                ChallengeResponses=answer), "NotAuthorizedException")
    fails(lambda: idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="USER_SRP_AUTH",
                                    AuthParameters={"USERNAME": "sam@example.com", "SRP_A": "0"}),
          "InvalidParameterException")
    fails(lambda: idp.initiate_auth(ClientId=c["ClientId"], AuthFlow="USER_PASSWORD_AUTH",
                                    AuthParameters={"USERNAME": "sam@example.com", "PASSWORD": "N3w-Horse-pw"}),
          "InvalidParameterException", "USER_PASSWORD_AUTH flow not enabled for this client")
