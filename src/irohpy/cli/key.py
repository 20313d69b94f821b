"""``irohpy key``: make and read identity key files."""

from __future__ import annotations

import argparse
import os
import sys

from irohpy.base.keys import SecretKey
from irohpy.errors import KeyFileError


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = sub.add_parser("key", help="generate and inspect secret key files")
    keys = parser.add_subparsers(dest="key_command", required=True, metavar="SUBCOMMAND")

    gen = keys.add_parser("generate", help="create a new secret key file and print its EndpointId")
    gen.add_argument("--out", metavar="FILE", help="write the key here (mode 0600); refuses to overwrite")
    gen.add_argument("--print-secret", action="store_true",
                     help="without --out: print the secret key (hex, for IROH_SECRET) on stdout instead")
    gen.add_argument("--force", action="store_true", help="overwrite FILE if it exists")
    gen.set_defaults(func=generate)

    show = keys.add_parser("show", help="print the EndpointId of a key file")
    show.add_argument("file", metavar="FILE")
    show.set_defaults(func=show_key)


def generate(args: argparse.Namespace) -> int:
    secret = SecretKey.generate()
    if args.out:
        if os.path.exists(args.out) and not args.force:
            raise KeyFileError(f"{args.out} exists; pass --force to overwrite it")
        secret.save(args.out)
        print(secret.public())
        print(f"wrote secret key to {args.out}", file=sys.stderr)
    elif args.print_secret:
        print(secret.to_bytes().hex())
        print(f"endpoint id: {secret.public()}", file=sys.stderr)
    else:
        raise KeyFileError("pass --out FILE to keep the key (or --print-secret to print it, for IROH_SECRET)")
    return 0


def show_key(args: argparse.Namespace) -> int:
    print(SecretKey.load(args.file).public())
    return 0
