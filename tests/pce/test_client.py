"""The PCE client against the simulator over real HTTP: every retry and error path."""

from __future__ import annotations

import asyncio
import base64
import logging

import httpx
import pytest
from aiohttp import web

from flowexport.core.flows import Flow
from flowexport.pce.client import (
    PCEClient,
    PCECredentials,
    RetryPolicy,
    _retry_after,
    tls_verify,
)
from flowexport.pce.errors import (
    PCEAuthError,
    PCEConfigError,
    PCENotFoundError,
    PCEPermissionError,
    PCEProtocolError,
    PCERequestError,
    PCETLSError,
    PCEUnavailableError,
)
from flowexport.sim.pce import PCESimulator
from flowexport.sim.serve import ServerThread
from flowexport.sim.tls import make_loopback_tls
from tests.pcesim import API_KEY, API_SECRET, SimPCE, make_config

CREDS = PCECredentials("api_other", "other-secret")
FLOWS = [Flow(f"10.0.{i // 200}.{i % 200 + 1}", "10.1.0.5", 443, 6) for i in range(2500)]


def uploads(pce: SimPCE) -> list[dict[str, object]]:
    return list(pce.call(lambda: list(pce.sim.state.uploads)))


async def test_upload_one_batch(pce: SimPCE, client: PCEClient) -> None:
    result = await client.upload(FLOWS[:3])
    assert (result.sent, result.received, result.failed, result.accepted) == (3, 3, 0, 3)
    assert pce.call(lambda: list(pce.sim.state.flows)) == [tuple(f) for f in FLOWS[:3]]


async def test_upload_all_splits_into_batches_of_at_most_1000(
    pce: SimPCE, client: PCEClient
) -> None:
    seen = []
    summary = await client.upload_all(FLOWS, batch_size=1000, on_batch=seen.append)
    assert [u["lines"] for u in uploads(pce)] == [1000, 1000, 500]
    assert (summary.batches, summary.flows, summary.accepted, summary.failed) == (3, 2500, 2500, 0)
    assert len(seen) == 3
    await client.upload_all(FLOWS[:10], batch_size=4)
    assert [u["lines"] for u in uploads(pce)][3:] == [4, 4, 2]


async def test_more_than_1000_flows_are_never_sent_in_one_request(
    pce: SimPCE, client: PCEClient
) -> None:
    with pytest.raises(ValueError, match="between 1 and 1000"):
        await client.upload(FLOWS[:1001])
    assert uploads(pce) == []


async def test_rejected_lines_are_a_partial_success(pce: SimPCE, client: PCEClient) -> None:
    pce.faults(reject_flows_containing="10.0.0.2,")
    result = await client.upload(FLOWS[:3])
    assert (result.received, result.failed, result.accepted) == (3, 1, 2)
    assert result.failed_flows == ["10.0.0.2,10.1.0.5,443,6"]
    assert len(uploads(pce)) == 1, "the good lines are not resent"


async def test_429_honours_retry_after(pce: SimPCE, client: PCEClient) -> None:
    pce.faults(throttle_first=2, retry_after=7)
    result = await client.upload(FLOWS[:1])
    assert result.accepted == 1
    assert pce.delays == [7.0, 7.0]
    assert client.retries == 2


async def test_429_without_retry_after_backs_off_exponentially_with_jitter(
    pce: SimPCE, client: PCEClient
) -> None:
    pce.faults(throttle_first=3, retry_after=None)
    await client.upload(FLOWS[:1])
    assert len(pce.delays) == 3
    for attempt, delay in enumerate(pce.delays, start=1):
        ceiling = 0.5 * 2 ** (attempt - 1)
        assert 0.5 * ceiling <= delay <= ceiling


async def test_5xx_is_retried_then_succeeds(pce: SimPCE, client: PCEClient) -> None:
    pce.faults(fail_first=2, fail_status=502)
    assert (await client.upload(FLOWS[:2])).accepted == 2
    statuses = [r["status"] for r in pce.requests()]
    assert statuses == [502, 502, 201]


async def test_dropped_connection_is_retried(pce: SimPCE, client: PCEClient) -> None:
    pce.faults(drop_first=1)
    assert (await client.upload(FLOWS[:2])).accepted == 2
    assert client.retries == 1


async def test_retries_exhausted_is_a_clear_unavailable_error(
    pce: SimPCE, client: PCEClient
) -> None:
    pce.faults(fail_first=10, fail_status=503)
    with pytest.raises(PCEUnavailableError, match="failed 4 times, last: HTTP 503"):
        await client.upload(FLOWS[:1])
    assert len(pce.requests()) == 4


async def test_slow_answers_time_out_and_are_retried(pce: SimPCE) -> None:
    pce.faults(delay_seconds=1.0)
    async with pce.client(timeout=httpx.Timeout(0.2), retry=RetryPolicy(2, 0.01, 0.01)) as c:
        with pytest.raises(PCEUnavailableError, match="timed out"):
            await c.upload(FLOWS[:1])
        assert c.retries == 1


async def test_connection_refused_is_retried_then_unavailable() -> None:
    dead = PCEClient("http://127.0.0.1:9", 1, CREDS, retry=RetryPolicy(3, 0.01, 0.01))
    async with dead:
        with pytest.raises(PCEUnavailableError, match="connection failed"):
            await dead.probe()
        assert dead.retries == 2


async def test_401_is_not_retried_and_names_the_credentials(pce: SimPCE) -> None:
    async with pce.client(secret="wrong-secret") as c:
        with pytest.raises(PCEAuthError, match="auth username") as caught:
            await c.upload(FLOWS[:1])
    assert len(pce.requests()) == 1
    assert "wrong-secret" not in str(caught.value)


async def test_403_is_not_retried(pce: SimPCE, client: PCEClient) -> None:
    pce.call(lambda: setattr(pce.sim.config, "read_only_keys", frozenset({"api_1a2b3c4d5e6f"})))
    await client.probe()  # reading is allowed
    with pytest.raises(PCEPermissionError, match="lacks permission"):
        await client.upload(FLOWS[:1])
    assert [r["status"] for r in pce.requests()] == [200, 403]


async def test_404_names_url_and_org(pce: SimPCE) -> None:
    async with pce.client(org=42) as c:
        with pytest.raises(PCENotFoundError, match=r"org id \(42\)"):
            await c.probe()
    assert len(pce.requests()) == 1


async def test_probe(client: PCEClient, pce: SimPCE) -> None:
    await client.probe()
    assert pce.requests()[0]["path"] == "/api/v2/orgs/1/labels"


def test_retry_after_formats() -> None:
    assert _retry_after("12") == 12.0
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert _retry_after("1000000") == 300.0  # capped
    assert _retry_after(None) is None
    assert _retry_after("soon") is None


async def test_success_with_an_undocumented_body_is_a_protocol_error() -> None:
    app = web.Application()

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(status=201, text="<html>ok</html>")

    app.router.add_post("/api/v2/orgs/1/agents/bulk_traffic_flows", garbage)
    with ServerThread(app) as url:
        async with PCEClient(url, 1, CREDS) as c:
            with pytest.raises(PCEProtocolError, match="not JSON"):
                await c.upload(FLOWS[:1])


class TestTLS:
    def serve_tls(self) -> tuple[ServerThread, str]:
        tls = make_loopback_tls()
        sim = PCESimulator(make_config())
        return ServerThread(sim.app, ssl_context=tls.server_context()), tls.ca_pem

    async def test_ca_bundle_verifies(self) -> None:
        server, ca_pem = self.serve_tls()
        with server as url:
            assert url.startswith("https://")
            async with SimPCE(url, PCESimulator(), server).client(ca_pem=ca_pem) as c:
                await c.probe()

    async def test_unknown_ca_fails_fast_with_advice(self) -> None:
        server, _ = self.serve_tls()
        with server as url:
            async with SimPCE(url, PCESimulator(), server).client() as c:
                with pytest.raises(PCETLSError, match="unknown issuer; supply its CA bundle"):
                    await c.probe()
                assert c.retries == 0

    async def test_hostname_mismatch_says_so(self) -> None:
        tls = make_loopback_tls()  # for localhost, 127.0.0.1 and ::1, not 127.0.0.2
        sim = PCESimulator(make_config())
        server = ServerThread(sim.app, host="127.0.0.2", ssl_context=tls.server_context())
        with server as url:
            async with SimPCE(url, sim, server).client(ca_pem=tls.ca_pem) as c:
                with pytest.raises(PCETLSError) as caught:
                    await c.probe()
                assert c.retries == 0
        message = str(caught.value)
        assert "hostname mismatch" in message
        assert "does not name 127.0.0.2" in message
        assert "spec.pce.url" in message
        assert "CA bundle" not in message

    async def test_plain_http_on_an_https_url_fails_fast(self, pce: SimPCE) -> None:
        https = pce.url.replace("http://", "https://")
        async with SimPCE(https, pce.sim, pce.server).client() as c:
            with pytest.raises(PCEConfigError, match="plain HTTP on an https URL") as caught:
                await c.probe()
            assert c.retries == 0
        assert "check the port" in str(caught.value)

    async def test_insecure_is_loud(self, caplog: pytest.LogCaptureFixture) -> None:
        server, _ = self.serve_tls()
        with server as url, caplog.at_level(logging.WARNING, logger="flowexport.pce"):
            async with SimPCE(url, PCESimulator(), server).client(insecure=True) as c:
                await c.probe()
        assert "DISABLED" in caplog.text

    def test_bad_bundle_and_conflicting_choices(self) -> None:
        with pytest.raises(PCEConfigError, match="not valid PEM"):
            tls_verify("not a certificate", insecure=False)
        with pytest.raises(PCEConfigError, match="exclude"):
            tls_verify(make_loopback_tls().ca_pem, insecure=True)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://127.0.0.1:99999", "invalid port"),
        ("https://127.0.0.1:0", "invalid port"),
        ("https://127.0.0.1:https", "invalid port"),
        ("https://pce.example.com/?org=1", "query"),
        ("http://pce.example.com", "loopback"),
        ("https://pce.example.com/api/v2", "without the /api/v2 path"),
        ("pce.example.com", "must look like https://"),
    ],
)
def test_a_bad_url_is_a_config_error(url: str, message: str) -> None:
    with pytest.raises(PCEConfigError, match=message):
        PCEClient(url, 1, CREDS)


def test_credentials_in_the_url_are_refused_unrepeated(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(PCEConfigError, match="must not contain credentials") as caught:
        PCEClient(f"https://{API_KEY}:{API_SECRET}@127.0.0.1:8443", 1, CREDS)
    assert API_SECRET not in str(caught.value) + caplog.text


async def test_secret_never_appears_in_logs_errors_or_repr(
    pce: SimPCE, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    messages = []
    async with pce.client() as c:
        messages.append(repr(c))
        pce.faults(fail_first=10)
        try:
            await c.upload(FLOWS[:1])
        except PCEUnavailableError as exc:
            messages.append(str(exc))
    pce.faults()
    async with pce.client(secret=API_SECRET + "x") as c:
        try:
            await c.probe()
        except PCEAuthError as exc:
            messages.append(str(exc))
    text = caplog.text + "\n".join(messages)
    assert API_SECRET not in text
    assert base64.b64encode(f"{API_KEY}:{API_SECRET}".encode()).decode() not in text


class TestWorkloadsAndLabels:
    async def test_ensure_creates_missing_marked_workloads_once(
        self, pce: SimPCE, client: PCEClient
    ) -> None:
        result = await client.ensure_unmanaged_workloads(
            ["10.0.0.1", "10.0.0.2", "10.0.0.1", "2001:db8::0:1"], "flowexport"
        )
        assert (result.created, result.existing, result.failed) == (3, 0, {})
        workloads = pce.call(lambda: list(pce.sim.state.workloads.values()))
        assert {w["external_data_reference"] for w in workloads} == {
            "10.0.0.1",
            "10.0.0.2",
            "2001:db8::1",
        }
        assert {w["external_data_set"] for w in workloads} == {"flowexport"}
        again = await client.ensure_unmanaged_workloads(["10.0.0.1", "10.0.0.3"], "flowexport")
        assert (again.created, again.existing) == (1, 1)

    async def test_partial_ip_filter_is_compared_exactly(
        self, pce: SimPCE, client: PCEClient
    ) -> None:
        await client.create_workload(
            {"name": "db", "interfaces": [{"name": "eth0", "address": "10.0.0.10"}]}
        )
        assert await client.find_workloads_by_ip("10.0.0.1") == []
        result = await client.ensure_unmanaged_workloads(["10.0.0.1"], "flowexport")
        assert result.created == 1
        assert len(await client.find_workloads_by_ip("10.0.0.10")) == 1

    async def test_bulk_create_in_chunks_of_1000(self, pce: SimPCE, client: PCEClient) -> None:
        ips = [f"10.9.{i // 250}.{i % 250 + 1}" for i in range(2100)]
        result = await client.ensure_unmanaged_workloads(ips, "flowexport")
        assert result.created == 2100
        bulk = [r for r in pce.requests() if r["path"].endswith("bulk_create")]
        assert len(bulk) == 3

    async def test_one_bulk_operation_at_a_time(self, pce: SimPCE) -> None:
        pce.call(lambda: setattr(pce.sim.config, "bulk_seconds", 0.3))
        body = [
            {"name": f"w{i}", "interfaces": [{"name": "eth0", "address": f"10.8.0.{i}"}]}
            for i in range(1, 4)
        ]
        real = {"sleep": asyncio.sleep, "retry": RetryPolicy(10, 0.1, 0.5)}
        elsewhere = pce.url.replace("127.0.0.1", "localhost")  # as another process sees it
        async with (
            pce.client(**real) as one,
            pce.client(**real) as other,
            PCEClient(elsewhere, 1, PCECredentials(API_KEY, API_SECRET), **real) as far,
        ):
            # Clients in one process (several FlowExports on one PCE org) take turns.
            await asyncio.gather(one.bulk_create_workloads(body), other.bulk_create_workloads(body))
            await asyncio.gather(one.bulk_create_workloads(body), one.bulk_create_workloads(body))
            assert 429 not in [r["status"] for r in pce.requests()]
            # Another process sharing the key: the PCE answers the second 429 and the client
            # retries after backing off.
            await asyncio.gather(one.bulk_create_workloads(body), far.bulk_create_workloads(body))
            assert [r["status"] for r in pce.requests()].count(429) >= 1

    async def test_bulk_failures_are_reported_per_address(
        self, pce: SimPCE, client: PCEClient
    ) -> None:
        results = await client.bulk_create_workloads(
            [
                {"name": "ok", "interfaces": [{"name": "eth0", "address": "10.7.0.1"}]},
                {"name": "bad", "interfaces": [{"name": "eth0", "address": "not-an-ip"}]},
            ]
        )
        assert results[0]["status"] == "created"
        assert results[1]["href"] is None
        assert "not an IP address" in results[1]["errors"][0]["message"]

    async def test_labels_find_exactly_and_create_once(
        self, pce: SimPCE, client: PCEClient
    ) -> None:
        web2 = await client.ensure_label("role", "web2")
        web = await client.ensure_label("role", "web")
        assert web["href"] != web2["href"]
        assert await client.ensure_label("role", "web") == web
        assert await client.find_label("role", "we") is None
        assert len(pce.call(lambda: list(pce.sim.state.labels))) == 2


async def test_400_is_not_retried(pce: SimPCE, client: PCEClient) -> None:
    pce.faults(fail_first=1, fail_status=400)
    with pytest.raises(PCERequestError, match=r"refused POST .* \(400\)"):
        await client.upload(FLOWS[:1])
    assert len(pce.requests()) == 1
