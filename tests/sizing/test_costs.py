"""The running cost of a deployment, checked against arithmetic done by hand."""

import pytest

from sizing.costs import HostCost


def test_dev_stack_cost_by_hand():
    # g4dn.xlarge $0.526/h (catalog), 120 GB gp3 at $0.08/GB-month, one public IPv4 at $0.005/h.
    # volume: 120 x 0.08 = $9.60/month = 9.60 / 730 = $0.0131507/h
    # total: 0.526 + 0.0131507 + 0.005 = $0.5441507/h; x 730 = 383.98 + 9.60 + 3.65 = $397.23/month
    cost = HostCost(instance_usd_per_hour=0.526, volume_gb=120, public_ipv4_addresses=1)
    assert cost.volume_usd_per_hour == pytest.approx(0.0131507, abs=1e-7)
    assert cost.total_usd_per_hour == pytest.approx(0.5441507, abs=1e-7)
    assert cost.total_usd_per_month == pytest.approx(397.23, abs=0.005)
    assert cost.stopped_usd_per_month == pytest.approx(13.25, abs=0.005)  # 9.60 + 3.65
    assert [round(m, 2) for _, _, m in cost.lines()] == [383.98, 9.60, 3.65, 397.23]


def test_a_type_without_an_on_demand_price_has_no_total():
    cost = HostCost(instance_usd_per_hour=None, volume_gb=500, public_ipv4_addresses=1)
    assert cost.total_usd_per_hour is None and cost.total_usd_per_month is None
    assert cost.stopped_usd_per_month == pytest.approx(500 * 0.08 + 3.65)


def test_the_sizing_report_bills_the_model_volumes_throughput_as_the_stack_does():
    """The report (preview, tools/size, tools/plan) and the stack's costUsd output are one figure:
    a model whose weights need more than gp3's free 125 MiB/s pays for the throughput in both."""
    import re

    from config.validation import parse
    from sizing.choice import plan as size
    from sizing.costs import host_cost
    from sizing.report import format_report
    from sizing.startup import model_volume_for

    settings = parse({"model": "Qwen/Qwen2.5-7B-Instruct", "maxModelLen": 16384})
    chosen = size(settings)
    performance = model_volume_for(chosen, settings)
    assert performance.usd_per_month > 0, "this model's weights need more than the free throughput"
    stack = host_cost(chosen.hourly_price_usd, chosen.root_volume_gb + chosen.model_volume_gb,
                      volume_performance_usd_per_month=performance.usd_per_month)
    running, stopped = map(float, re.search(
        r"cost: running \$([0-9.]+)/h, stopped \$([0-9.]+)/h", format_report(chosen)).groups())
    assert running == pytest.approx(stack.total_usd_per_hour, rel=1e-3)
    assert stopped == pytest.approx(stack.stopped_usd_per_hour, rel=1e-3)
