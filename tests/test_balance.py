"""Load-balanced groups: ordering strategies, in-flight counts shared through a
real Redis, the walk's order, and groups in YAML, `routes` and the admin."""

from __future__ import annotations

import io
import itertools
import json
from typing import Any

import pytest
from django.core.management import call_command

from routing.admin_chain import describe_chain
from routing.balance import Balancer, InFlight, Latency, SharedCounts, smooth_wrr
from routing.config_export import export_document
from routing.config_io import import_document
from routing.config_schema import ConfigError, load_yaml
from routing.models import BackendMapping, CloudCredential, MappingTarget, Provider
from routing.resolution import Hop, Mapping, Route, Target, grouped, segments
from routing.route_tester import chain_roles


def group_route(balance: str = "least-in-flight", weights: tuple[int, int] = (1, 1)) -> Route:
    """primary -> group g: a | b -> fallback."""
    targets = grouped([
        Target("provider", "primary", "m"),
        Target("provider", "a", "m", group="g", weight=weights[0]),
        Target("provider", "fallback", "m"),
        Target("provider", "b", "m", group="g", weight=weights[1]),
    ])  # fmt: skip
    mapping = Mapping(1, "pool", 0, targets, balance=balance)
    return Route("pool", tuple(Hop(t, "m") for t in targets), mapping, "test")


def names(order: list[tuple[int, Hop]]) -> list[str]:
    return [hop.target.name for _, hop in order]


def balancer(rng: float = 0.5) -> Balancer:
    return Balancer(InFlight(), Latency(), rng=lambda: rng)


class TestChainShape:
    def test_a_group_stands_at_its_first_members_position(self) -> None:
        route = group_route()
        assert names(list(enumerate(route.chain))) == ["primary", "a", "b", "fallback"]
        shape = [[hop.target.name for _, hop in s] for s in segments(route.chain)]
        assert shape == [["primary"], ["a", "b"], ["fallback"]]

    def test_chain_without_groups_is_unchanged(self) -> None:
        targets = [Target("provider", n) for n in "xyz"]
        assert grouped(targets) == tuple(targets)


class TestStrategies:
    def test_least_in_flight_picks_the_idle_member_and_keeps_positions(self) -> None:
        b = balancer()
        b.inflight.begin("a/m")
        assert names(b.order(group_route())) == ["primary", "b", "a", "fallback"]
        b.inflight.begin("b/m")
        b.inflight.begin("b/m")
        assert names(b.order(group_route())) == ["primary", "a", "b", "fallback"]
        b.inflight.end("b/m")
        b.inflight.end("b/m")
        b.inflight.end("a/m")
        assert b.inflight.mine() == {}

    def test_least_in_flight_counts_per_unit_of_weight(self) -> None:
        b = balancer()
        for _ in range(2):
            b.inflight.begin("a/m")  # a: 3 per 3 = 1.0 ... b: 1 per 1 = 1.0 with +1
        assert names(b.order(group_route(weights=(3, 1))))[1] == "a"  # (2+1)/3 < (0+1)/1
        b.inflight.begin("a/m")
        b.inflight.begin("a/m")
        assert names(b.order(group_route(weights=(3, 1))))[1] == "b"  # (4+1)/3 > 1

    def test_least_in_flight_ties_take_turns(self) -> None:
        b = balancer()
        firsts = [names(b.order(group_route()))[1] for _ in range(6)]
        assert firsts == ["a", "b", "a", "b", "a", "b"]
        # Unequal weights are no tie: the heavier idle member goes first every time.
        assert {names(b.order(group_route(weights=(2, 1))))[1] for _ in range(4)} == {"a"}

    def test_other_processes_counts_are_added(self) -> None:
        b = balancer()
        b.inflight.others = {"a/m": 5}
        assert names(b.order(group_route()))[1] == "b"

    def test_round_robin_is_smooth_and_weighted(self) -> None:
        assert smooth_wrr([5, 1, 1]) == [0, 0, 1, 0, 2, 0, 0]
        b = balancer()
        firsts = [names(b.order(group_route("round-robin", (2, 1))))[1] for _ in range(6)]
        assert firsts == ["a", "b", "a", "a", "b", "a"]
        # The other member follows as the group's fallback.
        assert names(b.order(group_route("round-robin", (2, 1))))[1:3] == ["a", "b"]

    def test_latency_prefers_unmeasured_then_the_fastest(self) -> None:
        b = balancer(rng=0.9)  # never explores
        b.latency.record("a/m", 0.200)
        assert names(b.order(group_route("latency")))[1] == "b"  # b has no sample yet
        b.latency.record("b/m", 0.500)
        assert names(b.order(group_route("latency")))[1] == "a"
        for _ in range(10):
            b.latency.record("a/m", 2.0)  # a got slow: the EWMA follows
        assert names(b.order(group_route("latency")))[1] == "b"

    def test_latency_explores_a_random_member_now_and_then(self) -> None:
        draws = itertools.cycle([0.01, 0.99])  # explore, then pick index 1 of 2
        b = Balancer(InFlight(), Latency(), rng=lambda: next(draws))
        b.latency.record("a/m", 0.1)
        b.latency.record("b/m", 5.0)
        assert names(b.order(group_route("latency")))[1] == "b"


class TestSharedCounts:
    def test_an_unreadable_entry_is_dropped_and_sharing_goes_on(self, redis_url: str) -> None:
        one, two = InFlight(), InFlight()
        share_one, share_two = SharedCounts(one, redis_url), SharedCounts(two, redis_url)
        two.begin("a/m")
        share_two.share()
        share_one.client.hset("gateway:inflight", "garbage", b"not json")
        share_one.client.hset("gateway:inflight", "odd", json.dumps({"at": "x"}))
        share_one.share()
        assert one.others == {"a/m": 1}
        fields = share_one.client.hkeys("gateway:inflight")
        assert b"garbage" not in fields and b"odd" not in fields
        share_one.stop()
        share_two.stop()

    def test_the_share_thread_survives_a_failed_period(self, redis_url: str) -> None:
        import threading

        counts = InFlight()
        sharing = SharedCounts(counts, redis_url, period=0.01)
        calls: list[int] = []
        done = threading.Event()

        def flaky() -> None:
            calls.append(1)
            if len(calls) == 1:
                raise RuntimeError("a bug in one period")
            done.set()

        sharing.share = flaky  # type: ignore[method-assign]
        counts.others = {"a/m": 3}
        sharing.start()
        assert done.wait(30), "the thread died with the first failure"
        sharing.stop()
        sharing.join(30)
        assert len(calls) >= 2

    def test_two_processes_see_each_others_counts_and_a_dead_one_drops_out(
        self, redis_url: str
    ) -> None:
        one, two = InFlight(), InFlight()
        share_one, share_two = SharedCounts(one, redis_url), SharedCounts(two, redis_url)
        one.begin("a/m")
        one.begin("a/m")
        two.begin("b/m")
        share_one.share()
        share_two.share()
        share_one.share()
        assert (one.count("a/m"), one.count("b/m")) == (2, 1)
        assert (two.count("a/m"), two.count("b/m")) == (2, 1)
        share_one.stop()  # a clean exit withdraws its counts
        share_two.share()
        assert two.others == {}
        # A process that died without a word: its entry goes stale and is dropped.
        three = SharedCounts(InFlight(), redis_url)
        three.counts.begin("a/m")
        three.share()
        share_two.share()
        assert two.count("a/m") == 1
        share_two.client.hset(
            "gateway:inflight", three.me, json.dumps({"at": 0, "counts": {"a/m": 9}})
        )
        share_two.share()
        assert two.count("a/m") == 0
        assert three.me.encode() not in share_two.client.hgetall("gateway:inflight")
        share_two.stop()


@pytest.mark.django_db
class TestConfiguration:
    DOCUMENT = """
version: 1
providers:
  - {name: mac-1, kind: openai, base_url: "http://10.0.0.1:8000/v1"}
  - {name: mac-2, kind: openai, base_url: "http://10.0.0.2:8000/v1"}
  - {name: cloud, kind: openai}
mappings:
  - pattern: qwen
    balance: round-robin
    chain:
      - group: [{provider: mac-1, model: qwen, weight: 2}, {provider: mac-2, model: qwen}]
      - {provider: cloud, model: gpt-4o-mini}
"""

    @pytest.fixture(autouse=True)
    def _cloud_routing(self, settings: Any) -> None:
        settings.ENABLE_CLOUD_ROUTING = True

    def imported(self) -> BackendMapping:
        import_document(load_yaml(self.DOCUMENT), {}, dry_run=False)
        for provider in Provider.objects.all():
            credential = CloudCredential(provider=provider)
            credential.set_key("sk-test")
            credential.save()
        return BackendMapping.objects.get(pattern="qwen")

    def test_yaml_group_imports_exports_and_reimports_unchanged(self) -> None:
        mapping = self.imported()
        rows = [(str(t), t.group, t.weight) for t in mapping.targets.all()]
        assert rows == [("mac-1:qwen", "g1", 2), ("mac-2:qwen", "g1", 1),
                        ("cloud:gpt-4o-mini", "", 1)]  # fmt: skip
        assert mapping.balance == "round-robin"
        document, _ = export_document()
        chain = document["mappings"][0]["chain"]
        assert chain[0] == {
            "name": "g1",
            "group": [{"provider": "mac-1", "model": "qwen", "weight": 2},
                      {"provider": "mac-2", "model": "qwen"}],
        }  # fmt: skip
        plan = import_document(document, {}, dry_run=True)
        assert plan.changes == []
        assert describe_chain(list(mapping.targets.all())) == (
            "[group g1: mac-1:qwen weight 2 | mac-2:qwen] → cloud:gpt-4o-mini"
        )

    def test_bad_groups_are_named_problems(self) -> None:
        document = load_yaml(self.DOCUMENT)
        document["mappings"][0]["balance"] = "fastest"
        document["mappings"][0]["chain"] = [
            {"group": [{"provider": "mac-1", "weight": 0}], "name": "bad name"},
            {"group": [], "colour": "red"},
            {"group": [{"provider": "mac-1", "weight": "2"}]},
        ]
        with pytest.raises(ConfigError) as info:
            import_document(document, {}, dry_run=True)
        problems = "\n".join(info.value.problems)
        assert "mappings[0].balance:" in problems and "fastest" in problems
        assert "chain[0].name: A group name is letters" in problems
        assert "chain[1]: unknown key 'colour'" in problems
        assert "chain[1].group: expected a list of at least one target" in problems
        assert "chain[2].group[0].weight: expected an integer from 1 to 100" in problems

    def test_routes_and_route_tester_show_the_group(self) -> None:
        self.imported()
        out = io.StringIO()
        call_command("routes", "qwen", stdout=out)
        text = out.getvalue()
        assert "group g1 (round-robin, shared by):" in text
        assert "provider mac-1, model 'qwen' (weight 2)" in text
        assert "fallback 1:" in text and "provider cloud" in text
        call_command("routes", stdout=(out := io.StringIO()))
        assert "[g1 round-robin: mac-1:qwen (weight 2) | mac-2:qwen] -> cloud:gpt-4o-mini" in (
            out.getvalue()
        )
        from routing.selectors import load_snapshot

        route = load_snapshot().table.resolve("qwen")
        assert route is not None
        assert chain_roles(route) == [
            "primary, group g1 (round-robin, weight 2, 0 in flight)",
            "primary, group g1 (round-robin, weight 1, 0 in flight)",
            "fallback 1",
        ]

    def test_the_dashboard_lists_groups_with_their_traffic(self) -> None:
        from gateway.monitor import group_states
        from routing.balance import balancer, reset

        self.imported()
        reset()
        try:
            balancer().inflight.begin("mac-2/qwen")
            balancer().latency.record("mac-1/qwen", 0.25)
            [group] = group_states()
        finally:
            reset()
        assert (group["mapping"], group["group"], group["balance"]) == ("qwen", "g1", "round-robin")
        assert group["members"] == [
            {"deployment": "mac-1/qwen", "weight": 2, "in_flight": 0, "ttft_ms": 250.0},
            {"deployment": "mac-2/qwen", "weight": 1, "in_flight": 1, "ttft_ms": None},
        ]

    def test_a_member_added_later_joins_its_group(self) -> None:
        mapping = self.imported()
        target = MappingTarget.objects.get(mapping=mapping, provider__name="cloud")
        target.group, target.weight = "g1", 3
        target.full_clean()
        target.save()
        from routing.selectors import load_snapshot

        route = load_snapshot().table.resolve("qwen")
        assert route is not None
        assert [h.target.name for h in route.chain] == ["mac-1", "mac-2", "cloud"]
        assert len(segments(route.chain)) == 1
