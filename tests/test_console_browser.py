"""The web console in a real browser: headless Chromium (Debian's package, installed by
scripts/ensure-chromium.sh) driven by Playwright. A topic is created in the page, a client
produces and consumes, and the page shows the messages, a live tail and the group's lag.
Screenshots go to the test's tmp dir."""

from __future__ import annotations

import json
import os
import re
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource
from console_helpers import wait_for

CHROMIUM = os.environ.get("PYKBROKER_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

# As root, `make test` installs Chromium (scripts/ensure-chromium.sh): missing there is a failure.
pytestmark = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK) and os.geteuid() != 0,
    reason=f"{CHROMIUM} missing (scripts/ensure-chromium.sh installs it as root)",
)


@pytest.fixture
def browser_page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1360, "height": 900})
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def test_topic_messages_tail_and_lag_in_the_browser(make_broker, browser_page, tmp_path):
    from playwright.sync_api import expect

    b = make_broker({"console.port": 0, "group.initial.rebalance.delay.ms": 0})
    url = b.console_url
    page = browser_page
    errors: list[str] = []
    foreign: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(url) else foreign.append(r.url))

    # Overview: this broker, online and controller.
    page.goto(url)
    expect(page.locator("body[data-ready=overview]")).to_be_attached()
    expect(page.locator("#brokers tbody tr")).to_have_count(1)
    expect(page.locator("#brokers tbody")).to_contain_text("online")
    expect(page.locator("#brokers tbody")).to_contain_text("controller")

    # Create a topic with the page's form; a client sees it.
    page.click("header nav a[data-nav=topics]")
    page.click("#new-topic")
    page.fill("#create-name", "clicks")
    page.fill("#create-partitions", "2")
    page.fill("#create-configs", "retention.ms=3600000")
    page.click("#create-submit")
    expect(page.locator("#topic-name")).to_have_text("clicks")
    expect(page.locator("#partitions tbody tr")).to_have_count(2)
    admin = AdminClient({"bootstrap.servers": b.bootstrap_servers})
    md = admin.list_topics("clicks", timeout=10)
    assert sorted(md.topics["clicks"].partitions) == [0, 1]

    # Alter a config in the page; a client sees the new value.
    page.click("[data-tab=configs]")
    row = page.locator("#configs tr[data-config='retention.ms']")
    expect(row).to_contain_text("3600000")
    expect(row).to_contain_text("topic override")
    row.get_by_role("button", name="Edit").click()
    row.locator("input").fill("7200000")
    row.get_by_role("button", name="Save").click()
    expect(page.locator("#configs tr[data-config='retention.ms']")).to_contain_text("7200000")
    res = ConfigResource(ConfigResource.Type.TOPIC, "clicks")
    assert admin.describe_configs([res])[res].result(10)["retention.ms"].value == "7200000"

    # Produce with a client; the message browser shows the records, JSON pretty-printed.
    producer = Producer({"bootstrap.servers": b.bootstrap_servers, "linger.ms": 5})
    for i in range(20):
        producer.produce("clicks", key=f"user-{i % 4}", partition=0,
                         value=json.dumps({"page": f"/p/{i}", "n": i}), headers={"src": b"web"})  # fmt: skip
    assert producer.flush(10) == 0
    page.click("[data-tab=messages]")
    page.click("#msg-load")
    rows = page.locator("#messages-body tr")
    expect(rows).to_have_count(20)
    first = page.locator("#messages-body tr[data-offset='0']")
    expect(first).to_contain_text("user-0")
    expect(first.locator("pre[data-kind=json]")).to_contain_text('"page": "/p/0"')
    expect(first).to_contain_text("src")
    page.select_option("#msg-format", "hex")
    expect(first.locator("td.val pre").first).to_have_text("75 73 65 72 2d 30")  # "user-0"
    page.select_option("#msg-format", "auto")
    page.screenshot(path=str(tmp_path / "messages.png"), full_page=True)

    # Live tail: records produced now appear without reloading.
    page.click("#msg-tail")
    expect(page.locator("#msg-status")).to_contain_text("waiting for new records")
    for i in range(3):
        producer.produce("clicks", value=f"tail-{i}", partition=0)
    assert producer.flush(10) == 0
    expect(page.locator("#messages-body tr[data-offset='22']")).to_contain_text("tail-2")
    expect(page.locator("#messages-body tr")).to_have_count(3)
    page.click("#msg-tail")  # stop

    # A consumer group commits part of the way: the page shows its member and lag.
    consumer = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": "dashboard",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.subscribe(["clicks"])
        read, deadline = 0, time.monotonic() + 60
        while read < 8:
            assert time.monotonic() < deadline, f"the consumer read {read} of 8 records"
            m = consumer.poll(1.0)
            if m is not None and m.error() is None and m.partition() == 0:
                read += 1
        consumer.commit(offsets=[TopicPartition("clicks", 0, 8)], asynchronous=False)
        page.click("header nav a[data-nav=groups]")
        row = page.locator("#groups tr[data-group=dashboard]")
        expect(row).to_contain_text("Stable")
        expect(row.locator("td.lag")).to_have_text("15")  # 23 records, committed at 8
        row.locator("a").click()
        expect(page.locator("#offsets tr[data-tp='clicks-0'] td.lag")).to_have_text("15")
        expect(page.locator("#members tbody tr")).to_have_count(1)
        expect(page.locator("#reset-submit")).to_be_disabled()  # Kafka: active groups can't
        page.screenshot(path=str(tmp_path / "group.png"), full_page=True)
    finally:
        consumer.close()

    # Once the group is empty, its offsets can be reset from the page.
    expect(page.locator("#reset-submit")).to_be_enabled()
    page.select_option("#reset-to", "latest")
    page.click("#reset-submit")
    expect(page.locator("#offsets tr[data-tp='clicks-0'] td.lag")).to_have_text("0")
    committed = wait_for(
        lambda: _committed(b, "dashboard", TopicPartition("clicks", 0)) == 23 or None,
        what="the reset committed as clients see it",
    )
    assert committed

    # The topic list and the overview's charts.
    page.click("header nav a[data-nav=topics]")
    expect(page.locator("#topics tr[data-topic=clicks]")).to_contain_text("23")
    page.screenshot(path=str(tmp_path / "topics.png"), full_page=True)
    page.click("header nav a[data-nav=overview]")
    expect(page.locator("#charts .chart")).not_to_have_count(0)
    expect(page.locator("#charts svg path").first).to_be_attached()
    expect(page.locator("#top-topics")).to_contain_text("clicks")
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)

    # Delete the topic from the page (confirming the dialog).
    page.goto(f"{url}#/topics/clicks")
    page.once("dialog", lambda d: d.accept())
    page.click("#delete-topic")
    expect(page).to_have_url(re.compile(r"#/topics$"))
    wait_for(lambda: "clicks" not in admin.list_topics(timeout=10).topics, what="deletion")

    assert errors == [] and foreign == []


def _committed(b, group: str, tp: TopicPartition) -> int:
    c = Consumer({"bootstrap.servers": b.bootstrap_servers, "group.id": group})
    try:
        return c.committed([tp], timeout=10)[0].offset
    finally:
        c.close()


def test_secured_console_in_the_browser(make_broker, tmp_path):
    """On a broker with SASL and ACLs the browser logs in (HTTP Basic, as a PLAIN user) and the
    page shows what the ACLs let alice do: her topic, its messages and live tail, no configs,
    and Kafka's error when she tries to delete it."""
    from playwright.sync_api import expect, sync_playwright

    jaas = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
            'username="admin" password="admin-secret" user_admin="admin-secret" '
            'user_alice="alice-secret";')  # fmt: skip
    b = make_broker({
        "listeners": "SASL_PLAINTEXT://127.0.0.1:0", "sasl.enabled.mechanisms": "PLAIN",
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": jaas,
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": "User:admin", "console.port": 0,
    })  # fmt: skip
    admin_conf = {"bootstrap.servers": b.bootstrap_servers, "security.protocol": "SASL_PLAINTEXT",
                  "sasl.mechanism": "PLAIN", "sasl.username": "admin",
                  "sasl.password": "admin-secret"}  # fmt: skip
    from confluent_kafka.admin import (
        AclBinding,
        AclOperation,
        AclPermissionType,
        NewTopic,
        ResourcePatternType,
        ResourceType,
    )

    admin = AdminClient(admin_conf)
    for f in admin.create_topics(
        [NewTopic("alice-orders", 1, 1), NewTopic("secret", 1, 1)]
    ).values():
        f.result(20)
    binding = AclBinding(ResourceType.TOPIC, "alice-orders", ResourcePatternType.LITERAL,
                         "User:alice", "*", AclOperation.READ, AclPermissionType.ALLOW)  # fmt: skip
    for f in admin.create_acls([binding]).values():
        f.result(20)
    producer = Producer(admin_conf)
    producer.produce("alice-orders", value=b"order-1")
    assert producer.flush(10) == 0

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            anonymous = browser.new_page()  # no credentials: the page is not served
            with pytest.raises(Exception, match="ERR_INVALID_AUTH_CREDENTIALS"):
                anonymous.goto(b.console_url)
            context = browser.new_context(
                viewport={"width": 1360, "height": 900},
                http_credentials={"username": "alice", "password": "alice-secret"},
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(b.console_url)
            expect(page.locator("body[data-ready=overview]")).to_be_attached()
            expect(page.locator("#cluster-id")).to_contain_text("User:alice")
            page.click("header nav a[data-nav=topics]")
            expect(page.locator("#topics tbody tr")).to_have_count(1)  # not "secret"
            expect(page.locator("#topics tr[data-topic=alice-orders]")).to_be_attached()
            page.goto(f"{b.console_url}#/topics/alice-orders")
            page.click("[data-tab=configs]")
            expect(page.locator("#configs-denied")).to_be_visible()
            page.click("[data-tab=messages]")
            page.click("#msg-load")
            expect(page.locator("#messages-body tr[data-offset='0']")).to_contain_text("order-1")
            page.click("#msg-tail")
            expect(page.locator("#msg-status")).to_contain_text("waiting for new records")
            producer.produce("alice-orders", value=b"order-2")
            assert producer.flush(10) == 0
            expect(page.locator("#messages-body tr[data-offset='1']")).to_contain_text("order-2")
            page.click("#msg-tail")
            page.screenshot(path=str(tmp_path / "secured-messages.png"), full_page=True)
            page.once("dialog", lambda d: d.accept())
            page.click("#delete-topic")
            expect(page.locator("#flash")).to_contain_text("TOPIC_AUTHORIZATION_FAILED")
            assert "alice-orders" in admin.list_topics(timeout=10).topics
            assert errors == []
        finally:
            browser.close()
