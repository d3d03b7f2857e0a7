"""The web console, in a real browser (Debian's Chromium driven by Selenium) and over plain HTTP
for the bad input: signing in and out, the functions list, test-invoke, monitoring, the log, a
failed asynchronous event replayed, and what a read-only user cannot do."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
import requests

import e2e_support as s

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = Path(os.environ.get("NIMBUS_CONSOLE_SCREENSHOTS", s.REPO_ROOT / "target" / "console-screenshots"))
FAST_RETRIES = "[async]\nretry_base_ms = 100\n"


@pytest.fixture
def console_node(node_factory, tmp_path):
    config = tmp_path / "console.toml"
    config.write_text(FAST_RETRIES)
    return node_factory(config=config, name="console")


def make_browser(tmp_path: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


@pytest.fixture
def browser(tmp_path):
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail("chromium and chromium-driver are not installed (the test command installs them)", pytrace=False)
    driver = make_browser(tmp_path)
    driver.set_page_load_timeout(60)
    # A click that submits a form returns before the next page is there: lookups wait for it.
    driver.implicitly_wait(10)
    yield driver
    driver.quit()


def absent(driver, by, selector: str) -> bool:
    """Whether the page (already loaded: check something on it first) lacks an element."""
    driver.implicitly_wait(0)
    try:
        return not driver.find_elements(by, selector)
    finally:
        driver.implicitly_wait(10)


def shot(driver, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def sign_in(driver, endpoint: str, key_id: str, secret: str, next_path: str = "/console/functions") -> None:
    from selenium.webdriver.common.by import By

    driver.get(f"{endpoint}{next_path}")
    assert "/console/signin" in driver.current_url, "an unsigned browser is sent to sign in"
    driver.find_element(By.ID, "key").send_keys(key_id)
    driver.find_element(By.ID, "secret").send_keys(secret)
    driver.find_element(By.ID, "signin").click()
    until(lambda: driver.current_url.endswith(next_path))


def nimbus_api(endpoint: str, path: str, method: str = "GET") -> dict:
    import http.client
    from urllib.parse import urlparse

    u = urlparse(endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request(method, path)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, (r.status, body)
    return json.loads(body)


def until(check, timeout: float = 30.0, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(interval)


def read_only_user(endpoint: str) -> tuple[str, str]:
    import boto3

    iam = boto3.client("iam", endpoint_url=endpoint, region_name=s.REGION,
                       aws_access_key_id=s.ACCESS_KEY, aws_secret_access_key=s.SECRET_KEY)
    user = s.unique_name("reader")
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="read", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["lambda:Get*", "lambda:List*"], "Resource": "*"}]}))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


def test_the_console_in_a_browser(console_node, browser, nimbus_bin, wasm_fixtures, make_zip):
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.common.by import By

    endpoint = console_node.endpoint
    cli = s.NimbusCli(nimbus_bin, console_node)
    name = s.unique_name("console-echo")
    cli.ok("deploy", name, "--wasm", wasm_fixtures["echo"], "--memory", "128")
    client = s.lambda_client(endpoint)
    # Markup in what a function's owner wrote is shown as text, never run.
    client.update_function_configuration(
        FunctionName=name, Description="<script>alert('d')</script>",
        Environment={"Variables": {"GREETING": "<img src=x onerror=alert('e')>"}})
    s.wait_updated(client, name)

    # Sign in; the function the CLI deployed is in the list.
    sign_in(browser, endpoint, s.ACCESS_KEY, s.SECRET_KEY)
    assert browser.title.startswith("Functions")
    row = browser.find_element(By.LINK_TEXT, name)
    shot(browser, "functions")

    # Test-invoke from the function's page: the result, the report and the log.
    row.click()
    assert browser.find_element(By.TAG_NAME, "h1").text == name
    assert "<script>alert('d')</script>" in browser.find_element(By.ID, "main").text
    assert "<img src=x onerror=alert('e')>" in browser.find_element(By.ID, "main").text
    payload = browser.find_element(By.ID, "payload")
    payload.clear()
    payload.send_keys('{"hello": "console"}')
    assert browser.find_element(By.ID, "payload-status").text == "Valid JSON."
    browser.find_element(By.ID, "invoke").click()
    result = browser.find_element(By.ID, "result")
    assert "Succeeded" in browser.find_element(By.ID, "result-status").text
    assert json.loads(browser.find_element(By.ID, "result-payload").text) == {"hello": "console"}
    assert browser.find_element(By.ID, "result-report").text.startswith("REPORT RequestId:")
    assert "START RequestId:" in browser.find_element(By.ID, "result-log").text
    assert result.is_displayed()
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    shot(browser, "function")

    # The invocation count rises on the monitoring page.
    browser.get(f"{endpoint}/console/functions/{name}/monitoring")
    first = int(until(lambda: (browser.refresh() or True)
                      and int(browser.find_element(By.ID, "total-invocations").text) >= 1
                      and browser.find_element(By.ID, "total-invocations").text))
    for _ in range(3):
        s.invoke(client, name, {"n": 1})
    until(lambda: (browser.refresh() or True)
          and int(browser.find_element(By.ID, "total-invocations").text) >= first + 3)
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect"), "the invocations are drawn"
    shot(browser, "monitoring")

    # The log: searched by request id and text.
    request_id = s.invoke(client, name, {"find": "me"}).request_id
    assert request_id
    browser.get(f"{endpoint}/console/functions/{name}/logs")
    browser.find_element(By.ID, "request_id").send_keys(request_id)
    browser.find_element(By.ID, "text").send_keys("report")
    browser.find_element(By.CSS_SELECTOR, "form.search button[type=submit]").click()
    until(lambda: "request_id=" in browser.current_url)
    matches = until(lambda: (browser.find_elements(By.CSS_SELECTOR, "#matches li")
                             or (browser.refresh() or None)))
    assert len(matches) == 1 and request_id in matches[0].text, [m.text for m in matches]
    # The live tail: entries logged after the page was drawn stream in.
    toggle = browser.find_element(By.ID, "tail-toggle")
    toggle.click()
    until(lambda: toggle.text == "Stop live tail")
    tailed = s.invoke(client, name, {"tail": "me"}).request_id
    until(lambda: any(tailed in li.text for li in browser.find_elements(By.CSS_SELECTOR, "#tail li")))
    toggle.click()
    shot(browser, "logs")

    # A failed asynchronous event: seen with its attempts and error, then replayed.
    failing = s.unique_name("console-fail")
    s.create_function(client, failing, make_zip("fail"), handler="fail.wasm")
    client.put_function_event_invoke_config(FunctionName=failing, MaximumRetryAttempts=0)
    client.invoke(FunctionName=failing, InvocationType="Event", Payload=b'{"doomed": true}')
    until(lambda: nimbus_api(endpoint, f"/nimbus/v1/functions/{failing}/events")["dead_lettered"] == 1)
    browser.get(f"{endpoint}/console/functions/{failing}/events")
    assert browser.find_element(By.ID, "dead-lettered").text == "1"
    letter = browser.find_element(By.CSS_SELECTOR, "article.letter")
    assert "RetriesExhausted" in letter.text and "Runtime.ExitError" in letter.text
    shot(browser, "events")
    attempts_before = len(nimbus_api(endpoint, f"/nimbus/v1/functions/{failing}/logs")["entries"])
    letter.find_element(By.CSS_SELECTOR, "button.replay").click()
    assert "was sent back" in browser.find_element(By.CSS_SELECTOR, ".notice.ok").text
    until(lambda: len(nimbus_api(endpoint, f"/nimbus/v1/functions/{failing}/logs")["entries"]) > attempts_before)

    # Other pages render for the administrator.
    for path, marker in (("/console/usage", "total-cost"), ("/console/fleet", "workers"),
                         ("/console/queues", "main")):
        browser.get(f"{endpoint}{path}")
        assert browser.find_element(By.ID, marker)
    shot(browser, "fleet")

    # The theme toggles and stays.
    before = browser.find_element(By.TAG_NAME, "html").get_attribute("data-theme")
    browser.find_element(By.CSS_SELECTOR, ".who form[action='/console/theme'] button").click()
    assert before == "auto"
    until(lambda: browser.find_element(By.TAG_NAME, "html").get_attribute("data-theme") == "dark")
    browser.get(f"{endpoint}/console/functions/{name}")
    shot(browser, "function-dark")

    # Signing out ends the session.
    browser.find_element(By.ID, "signout").click()
    until(lambda: "/console/signin" in browser.current_url)
    browser.get(f"{endpoint}/console/functions")
    assert "/console/signin" in browser.current_url

    # A read-only user sees the function but can neither invoke it nor replay an event.
    key_id, secret = read_only_user(endpoint)
    sign_in(browser, endpoint, key_id, secret, f"/console/functions/{name}")
    count_before = nimbus_api(endpoint, f"/nimbus/v1/functions/{name}/logs")["entries"]
    browser.find_element(By.ID, "invoke").click()
    assert "AccessDenied" in browser.find_element(By.CSS_SELECTOR, ".notice.error").text
    assert absent(browser, By.ID, "result")
    time.sleep(0.5)
    assert nimbus_api(endpoint, f"/nimbus/v1/functions/{name}/logs")["entries"] == count_before
    browser.get(f"{endpoint}/console/functions/{failing}/events")
    assert "AccessDenied" in browser.find_element(By.CSS_SELECTOR, ".notice.error").text
    assert absent(browser, By.CSS_SELECTOR, "button.replay")


class Console:
    """A console session over plain HTTP: what a browser would send, and also what it would not."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.http = requests.Session()

    def sign_in(self, key_id: str, secret: str) -> requests.Response:
        page = self.http.get(f"{self.endpoint}/console/signin")
        token = re.search(r'name="signin" value="([0-9a-f]+)"', page.text).group(1)
        return self.http.post(f"{self.endpoint}/console/signin", allow_redirects=False, data={
            "signin": token, "next": "/console/functions",
            "access_key_id": key_id, "secret_access_key": secret})

    def csrf(self, path: str = "/console/functions") -> str:
        page = self.http.get(f"{self.endpoint}{path}")
        assert page.status_code == 200, page.text
        return re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)

    def post(self, path: str, data: dict, **headers) -> requests.Response:
        return self.http.post(f"{self.endpoint}{path}", data=data, headers=headers, allow_redirects=False)


def invocations(endpoint: str, name: str) -> int:
    return len(nimbus_api(endpoint, f"/nimbus/v1/functions/{name}/logs")["entries"])


def test_the_console_refuses_bad_input(node, deploy):
    endpoint = node.endpoint
    name = deploy("echo")
    c = Console(endpoint)

    # Wrong secrets are refused, and repeated ones lock the key out for a while.
    wrong = Console(endpoint)
    refused = wrong.sign_in(s.ACCESS_KEY, "not-the-secret-0123456789")
    assert refused.status_code == 401 and "do not match" in refused.text
    assert "nimbus_console" not in refused.cookies
    # Sign-in posted from another site is refused even with the right key.
    page = wrong.http.get(f"{endpoint}/console/signin")
    token = re.search(r'name="signin" value="([0-9a-f]+)"', page.text).group(1)
    cross = wrong.http.post(f"{endpoint}/console/signin", allow_redirects=False, headers={"Origin": "http://evil.example"},
                            data={"signin": token, "access_key_id": s.ACCESS_KEY, "secret_access_key": s.SECRET_KEY})
    assert cross.status_code == 403 and "another site" in cross.text
    # Without the sign-in form's own cookie (a form posted from elsewhere), nothing signs in.
    bare = requests.post(f"{endpoint}/console/signin", allow_redirects=False,
                         data={"signin": token, "access_key_id": s.ACCESS_KEY, "secret_access_key": s.SECRET_KEY})
    assert bare.status_code == 403 and "expired" in bare.text

    signed = c.sign_in(s.ACCESS_KEY, s.SECRET_KEY)
    assert signed.status_code == 303 and signed.headers["Location"] == "/console/functions"
    cookie = signed.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    csrf = c.csrf(f"/console/functions/{name}")
    before = invocations(endpoint, name)

    # Malformed JSON: a message on the page, nothing invoked.
    r = c.post(f"/console/functions/{name}/invoke", {"csrf": csrf, "payload": '{"a": '})
    assert r.status_code == 400 and "not JSON" in r.text
    # Over the 6 MB a synchronous invocation takes.
    big = json.dumps({"x": "a" * (6_291_456 + 10)})
    r = c.post(f"/console/functions/{name}/invoke", {"csrf": csrf, "payload": big})
    assert r.status_code == 413 and "at most 6291456 bytes" in r.text
    # Without the form token, with a wrong one, and from another site.
    r = c.post(f"/console/functions/{name}/invoke", {"payload": "{}"})
    assert r.status_code == 403 and "session token" in r.text
    r = c.post(f"/console/functions/{name}/invoke", {"csrf": "0" * 64, "payload": "{}"})
    assert r.status_code == 403
    r = c.post(f"/console/functions/{name}/invoke", {"csrf": csrf, "payload": "{}"}, Origin="http://evil.example")
    assert r.status_code == 403 and "another site" in r.text
    r = c.post(f"/console/functions/{name}/invoke", {"csrf": csrf, "payload": "{}"}, **{"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403
    # A forged session cookie is no session: sent to sign in, nothing done.
    forged = requests.Session()
    forged.cookies.set("nimbus_console", "f" * 64)
    r = forged.post(f"{endpoint}/console/functions/{name}/invoke", data={"csrf": csrf, "payload": "{}"}, allow_redirects=False)
    assert r.status_code == 303 and r.headers["Location"].startswith("/console/signin")
    r = forged.get(f"{endpoint}/console/functions", allow_redirects=False)
    assert r.status_code == 303
    time.sleep(0.5)
    assert invocations(endpoint, name) == before, "none of the refused forms invoked the function"

    # The form that is right does invoke.
    r = c.post(f"/console/functions/{name}/invoke", {"csrf": csrf, "payload": '{"ok": 1}'})
    assert r.status_code == 200 and "Succeeded" in r.text
    s.eventually(lambda: assert_more(invocations(endpoint, name), before))

    # Markup in a path is escaped on the page that says it is not there.
    r = c.http.get(f"{endpoint}/console/functions/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
    assert r.status_code in (400, 404)
    assert "<script>alert(1)</script>" not in r.text and "&lt;script&gt;" in r.text
    # Headers that keep anything else from running or framing the console.
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert r.headers["X-Frame-Options"] == "DENY"
    # What a function returns on the node's own host (the console's origin) is sandboxed: its
    # scripts cannot read the console or send it the signed-in user's cookie.
    lam = s.lambda_client(endpoint)
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    lam.add_permission(FunctionName=name, StatementId="public-url", Action="lambda:InvokeFunctionUrl",
                       Principal="*", FunctionUrlAuthType="NONE")
    url_id = url.split("//", 1)[1].split(".", 1)[0]
    served = requests.post(f"{endpoint}/lambda-url/{url_id}/", data=b"<script>1</script>")
    assert served.status_code == 200
    policy = served.headers["Content-Security-Policy"]
    assert policy.startswith("sandbox ") and "allow-same-origin" not in policy
    # A next page elsewhere is never followed after sign-in.
    other = Console(endpoint)
    page = other.http.get(f"{endpoint}/console/signin", params={"next": "https://evil.example/"})
    assert 'value="/console/functions"' in page.text
    # A wrong log time is a message.
    r = c.http.get(f"{endpoint}/console/functions/{name}/logs", params={"from": "yesterday"})
    assert r.status_code == 400 and "is not a time" in r.text
    # Signing out ends the session for every later request.
    r = c.post("/console/signout", {"csrf": csrf})
    assert r.status_code == 303
    r = c.http.get(f"{endpoint}/console/functions", allow_redirects=False)
    assert r.status_code == 303

    # Five failures lock the key out, even with the right secret.
    locked = Console(endpoint)
    user_key, user_secret = read_only_user(endpoint)
    for _ in range(5):
        assert locked.sign_in(user_key, "wrong-secret-0123456789").status_code == 401
    r = locked.sign_in(user_key, user_secret)
    assert r.status_code == 429 and "Too many" in r.text


def assert_more(now: int, before: int) -> bool:
    assert now > before
    return True


def test_the_console_opens_without_sign_in_only_in_development_mode(node_factory, tmp_path):
    config = tmp_path / "dev.toml"
    config.write_text('[auth]\nmode = "none"\n')
    dev = node_factory(config=config, name="dev")
    r = requests.get(f"{dev.endpoint}/console/functions", allow_redirects=False)
    assert r.status_code == 200 and "Functions" in r.text
    assert "arn:aws:iam::000000000000:root" in r.text
    assert "nimbus_console=" in r.headers["Set-Cookie"]
    # One session for every browser of the machine, not one per request.
    again = requests.get(f"{dev.endpoint}/console/functions", allow_redirects=False)
    assert again.cookies["nimbus_console"] == r.cookies["nimbus_console"]
    # A page of another site reaching the port through a name rebound to loopback gets nothing.
    rebound = requests.get(f"{dev.endpoint}/console/functions", headers={"Host": f"evil.example:{dev.port}"},
                           allow_redirects=False)
    assert rebound.status_code == 403


def test_the_console_shows_buckets_tables_user_pools_stacks_and_queues(node, tmp_path):
    import boto3

    endpoint = node.endpoint
    session = boto3.session.Session(aws_access_key_id=s.ACCESS_KEY, aws_secret_access_key=s.SECRET_KEY,
                                    region_name=s.REGION)
    c = Console(endpoint)
    assert c.sign_in(s.ACCESS_KEY, s.SECRET_KEY).status_code == 303

    # Buckets: browse by prefix, upload through the form, download as an attachment.
    s3 = session.client("s3", endpoint_url=endpoint)
    bucket = s.unique_name("console").lower()
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="docs/<b>page<b>.html", Body=b"<script>alert(1)</script>", ContentType="text/html")
    page = c.http.get(f"{endpoint}/console/buckets")
    assert page.status_code == 200 and bucket in page.text
    top = c.http.get(f"{endpoint}/console/buckets/{bucket}")
    assert "docs/" in top.text and "page&lt;b&gt;" not in top.text
    inside = c.http.get(f"{endpoint}/console/buckets/{bucket}", params={"prefix": "docs/"})
    assert "&lt;b&gt;page&lt;b&gt;.html" in inside.text and "<b>page" not in inside.text
    got = c.http.get(f"{endpoint}/console/buckets/{bucket}/download", params={"key": "docs/<b>page<b>.html"})
    assert got.status_code == 200 and got.content == b"<script>alert(1)</script>"
    assert got.headers["Content-Type"] == "application/octet-stream"
    assert got.headers["Content-Disposition"].startswith("attachment;")
    csrf = c.csrf("/console/buckets")
    up = c.http.post(f"{endpoint}/console/buckets/{bucket}/upload", files={"file": ("../../notes.txt", b"hello console")},
                     data={"csrf": csrf, "prefix": "docs/"})
    assert up.status_code == 200 and "Stored docs/notes.txt" in up.text
    assert s3.get_object(Bucket=bucket, Key="docs/notes.txt")["Body"].read() == b"hello console"
    forged = c.http.post(f"{endpoint}/console/buckets/{bucket}/upload", files={"file": ("x.txt", b"x")},
                         data={"csrf": "0" * 64, "prefix": ""})
    assert forged.status_code == 403
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket, Prefix="x.txt")

    # Tables: a scan, and a query by partition key.
    ddb = session.client("dynamodb", endpoint_url=endpoint)
    table = s.unique_name("console")
    ddb.create_table(TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}], BillingMode="PAY_PER_REQUEST")
    ddb.put_item(TableName=table, Item={"pk": {"S": "alpha"}, "n": {"N": "7"}})
    ddb.put_item(TableName=table, Item={"pk": {"S": "beta"}, "n": {"N": "8"}})
    assert table in c.http.get(f"{endpoint}/console/tables").text
    scanned = c.http.get(f"{endpoint}/console/tables/{table}")
    assert "2 items" in scanned.text and "n: 7" in scanned.text and "n: 8" in scanned.text
    queried = c.http.get(f"{endpoint}/console/tables/{table}", params={"pk": "beta"})
    assert "1 items" in queried.text and "n: 8" in queried.text and "n: 7" not in queried.text

    # User pools and their users.
    idp = session.client("cognito-idp", endpoint_url=endpoint)
    pool = idp.create_user_pool(PoolName=s.unique_name("console"))["UserPool"]["Id"]
    idp.admin_create_user(UserPoolId=pool, Username="ada", UserAttributes=[{"Name": "email", "Value": "ada@example.com"}])
    assert pool in c.http.get(f"{endpoint}/console/userpools").text
    users = c.http.get(f"{endpoint}/console/userpools/{pool}")
    assert "ada@example.com" in users.text and "FORCE_CHANGE_PASSWORD" in users.text

    # Stacks: resources, outputs and events.
    cfn = session.client("cloudformation", endpoint_url=endpoint)
    stack = s.unique_name("console")
    cfn.create_stack(StackName=stack, TemplateBody=json.dumps({
        "Resources": {"Q": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"QueueUrl": {"Value": {"Ref": "Q"}, "Description": "the queue"}}}))
    until(lambda: cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE", timeout=60)
    assert stack in c.http.get(f"{endpoint}/console/stacks").text
    shown = c.http.get(f"{endpoint}/console/stacks/{stack}")
    assert "CREATE_COMPLETE" in shown.text and "QueueUrl" in shown.text and "AWS::SQS::Queue" in shown.text

    # Queues: depths, and messages peeked without being received.
    sqs = session.client("sqs", endpoint_url=endpoint)
    name = s.unique_name("console")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody='{"order": 42}')
    assert name in c.http.get(f"{endpoint}/console/queues").text
    for _ in range(2):
        peeked = c.http.get(f"{endpoint}/console/queues/{name}")
        assert "&quot;order&quot;: 42" in peeked.text and "received 0 times" in peeked.text
    got = sqs.receive_message(QueueUrl=url, AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    assert got["Attributes"]["ApproximateReceiveCount"] == "1", "peeking received nothing"
    assert c.http.get(f"{endpoint}/console/queues/{s.unique_name('none')}").status_code == 404


def test_another_accounts_console_sees_only_its_own(node, deploy):
    import http.client
    from urllib.parse import urlparse

    mine = deploy("echo")
    u = urlparse(node.endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.request("POST", "/nimbus/v1/accounts", body=json.dumps({"name": s.unique_name("tenant")}),
                 headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    created = json.loads(r.read())
    assert r.status == 201, created
    c = Console(node.endpoint)
    assert c.sign_in(created["access_key_id"], created["secret_access_key"]).status_code == 303
    listed = c.http.get(f"{node.endpoint}/console/functions")
    assert listed.status_code == 200 and mine not in listed.text
    assert f"arn:aws:iam::{created['account']['id']}:root" in listed.text
    other = c.http.get(f"{node.endpoint}/console/functions/{mine}")
    assert other.status_code == 404 and "ResourceNotFoundException" in other.text
    fleet = c.http.get(f"{node.endpoint}/console/fleet")
    assert fleet.status_code == 403 and "only the node" in fleet.text


def test_the_metrics_and_peek_apis_refuse_bad_input(node, deploy):
    import http.client
    from urllib.parse import urlparse

    name = deploy("echo")
    u = urlparse(node.endpoint)

    def get(path):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"{}")

    now_ms = int(time.time() * 1000)
    for query, fragment in (("period_s=0", "period_s must be 1 to 86400"),
                            ("period_s=90000", "period_s must be 1 to 86400"),
                            (f"since_ms={now_ms + 3_600_000}", "since_ms must be a time in the past"),
                            ("since_ms=0&period_s=1", "at most 1440")):
        status, body = get(f"/nimbus/v1/functions/{name}/metrics?{query}")
        assert status == 400 and fragment in body["Message"], (query, status, body)
    status, body = get(f"/nimbus/v1/functions/{s.unique_name('none')}/metrics")
    assert status == 404 and body["Type"] and "Function not found" in body["Message"]
    status, body = get(f"/nimbus/v1/functions/{name}/metrics")
    assert status == 200 and len(body["points"]) == 61 and body["truncated"] is False
    status, body = get(f"/nimbus/v1/queues/{s.unique_name('none')}/messages")
    assert status == 404 and "no queue" in body["Message"]
