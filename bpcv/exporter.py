"""The optional Prometheus endpoint of a node process (``prometheus = "HOST:PORT"`` in its config; off
when empty, the default): the psutil samples as gauges labelled by node, on ``/metrics``, so a fleet can
be scraped by the monitoring people already run. A pool process serves one endpoint for all its agents."""

from __future__ import annotations

import logging

from bpcv.errors import ConfigError
from bpcv.sampler import Sample

log = logging.getLogger(__name__)
GAUGES = {
    "cpu_percent": ("bpcv_process_cpu_percent", "CPU of the node's process, percent of one core"),
    "rss_bytes": ("bpcv_process_resident_memory_bytes", "resident memory of the node's process"),
    "net_sent": ("bpcv_machine_network_sent_bytes", "bytes the machine has sent (cumulative)"),
    "net_recv": ("bpcv_machine_network_received_bytes", "bytes the machine has received (cumulative)"),
    "temperature_c": ("bpcv_board_temperature_celsius", "hottest board temperature sensor"),
    "ledger_cpu_s": ("bpcv_ledger_cpu_seconds", "CPU seconds the node's replica spent on blocks (cumulative)"),
    "chain_height": ("bpcv_chain_height", "height of the node's chain replica"),
}


def parse_listen(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``:PORT`` for every interface); ConfigError naming the bad value."""
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"prometheus = {spec!r}: expected HOST:PORT, e.g. 0.0.0.0:9101")
    return host or "0.0.0.0", int(port)


class PrometheusExporter:
    """Serves the latest sample of each node of this process on ``http://HOST:PORT/metrics``."""

    def __init__(self, spec: str) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        host, port = parse_listen(spec)
        self.registry = CollectorRegistry()
        self.gauges = {
            field: Gauge(name, text, ["node"], registry=self.registry) for field, (name, text) in GAUGES.items()
        }
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"prometheus = {spec!r}: cannot listen there: {exc.strerror}") from exc
        log.info("Prometheus metrics on http://%s:%d/metrics", host, port)

    def observe(self, node: str, sample: Sample) -> None:
        for field, gauge in self.gauges.items():
            value = getattr(sample, field)
            if value is not None:
                gauge.labels(node=node).set(value)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def exporter_for(specs: list[str]) -> PrometheusExporter | None:
    """The process's exporter from its nodes' configs: None when none asks for one."""
    wanted = sorted({s for s in specs if s})
    if len(wanted) > 1:
        raise ConfigError(f"one process serves one Prometheus endpoint; its configs ask for {wanted}")
    return PrometheusExporter(wanted[0]) if wanted else None
