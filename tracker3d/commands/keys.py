"""`tracker3d keys`: CURVE key pairs for encrypted, authenticated ZMQ publishing."""
from __future__ import annotations

import argparse

HELP = "make CURVE key pairs (publisher and one subscriber) for --curve-keys"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keys", help=HELP, description=HELP + ". The publisher keeps DIR; a subscriber needs "
                       "client.key_secret and server.key (copy them as a folder with those names).")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to create the keys in")
    p.add_argument("--force", action="store_true", help="replace keys already in DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from streams.curve import make_keys

    d = make_keys(args.out, overwrite=args.force)
    print(f"wrote {d}/server.key_secret (publisher only), server.key, client.key_secret, client.key and "
          f"{d}/authorized/client.key\npublish with --curve-keys {d}; subscribers use a folder holding "
          "client.key_secret and server.key")
    return 0
