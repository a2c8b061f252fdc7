"""What several commands share: the broker options and the address they give."""

from __future__ import annotations

import argparse


def add_broker_arguments(parser: argparse.ArgumentParser, default: str | None = "mqtt://127.0.0.1:1883") -> None:
    parser.add_argument("--broker", default=default, help="mqtt://HOST:PORT, or mqtts://HOST:PORT with the TLS files")
    parser.add_argument("--tls-ca", default="", help="the consortium CA certificate (mqtts)")
    parser.add_argument("--tls-cert", default="", help="this node's client certificate (mqtts)")
    parser.add_argument("--tls-key", default="", help="this node's client key (mqtts)")


def broker_from_args(args: argparse.Namespace):  # noqa: ANN201 - BrokerAddress, imported lazily
    from bpcv.mqtt import BrokerAddress, TlsFiles

    tls = TlsFiles(args.tls_ca, args.tls_cert, args.tls_key) if args.tls_ca else None
    return BrokerAddress.parse(args.broker, tls)
