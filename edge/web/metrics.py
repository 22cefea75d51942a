"""/metrics: the gate's counters and latency histograms in Prometheus' text format.

The registry is the web side's own (not prometheus_client's global one), with one collector
that reads a ``LiveState`` at scrape time: the gate loop only bumps plain numbers, and the
cost of a scrape falls on the web thread.
"""

from __future__ import annotations

from ..gate.live import CAMERA_STATES, LiveState


def collector(live: LiveState):
    """A prometheus_client collector of ``live``'s figures, every name prefixed ``maskgate_``."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    class LiveCollector:
        def collect(self):
            m = live.metrics()
            c = m["counters"]
            yield CounterMetricFamily("maskgate_frames", "frames analysed", value=c["frames"])
            yield CounterMetricFamily("maskgate_faces", "faces detected and classified", value=c["faces"])
            yield CounterMetricFamily("maskgate_relay_pulses", "door relay pulses", value=c["relay_pulses"])
            yield CounterMetricFamily("maskgate_reconnects", "camera reconnections", value=c["reconnects"])
            decisions = CounterMetricFamily("maskgate_decisions", "gate decisions by kind", labels=["kind"])
            for kind in sorted({"unlock", "relock", "cancel", "deny", "clear", *m["decisions"]}):
                decisions.add_metric([kind], m["decisions"].get(kind, 0))
            yield decisions
            yield GaugeMetricFamily("maskgate_camera_up", "1 while frames flow from the source",
                                    value=1.0 if m["camera"] == "up" else 0.0)  # fmt: skip
            status = GaugeMetricFamily("maskgate_camera_status", "the source's state", labels=["status"])
            for s in CAMERA_STATES:
                status.add_metric([s], 1.0 if m["camera"] == s else 0.0)
            yield status
            latency = HistogramMetricFamily(
                "maskgate_stage_latency_seconds", "per-frame latency of each stage", labels=["stage"]
            )
            for stage, h in m["histograms"].items():
                buckets, total = [], 0
                for bound, count in zip((*h.bounds, float("inf")), h.counts, strict=True):
                    total += count
                    buckets.append(("+Inf" if bound == float("inf") else repr(bound / 1000), total))
                latency.add_metric([stage], buckets, h.sum / 1000)
            yield latency

    return LiveCollector()


def exposition(live: LiveState) -> tuple[bytes, str]:
    """The text exposition of a registry holding ``live``'s collector, and its content type."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector(live))
    return generate_latest(registry), CONTENT_TYPE_LATEST
