"""``kdaliens-keygen``: make the Ed25519 key pair that signs bundles.

    kdaliens-keygen --out keys/

writes ``keys/signing.key`` (secret, mode 0600: keep it on the machine that releases
bundles) and ``keys/signing.pub`` (ship it inside the app). Sign with
``kdaliens-export ... --sign keys/signing.key``; devices load with
``Ranker.load(bundle, trusted_keys=["signing.pub"])`` or a ``BundleStore`` given the same keys.
"""

from __future__ import annotations

import argparse
import sys

from kdaliens.sdk.errors import KdaliensError
from kdaliens.sdk.extras import help_text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kdaliens-keygen", description=help_text(__doc__),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="folder for signing.key and signing.pub (created if missing)")
    p.add_argument("--force", action="store_true", help="overwrite an existing key pair there")
    args = p.parse_args(argv)
    from kdaliens.sdk.signing import generate_keys, key_id, public_keys

    try:
        key, pub = generate_keys(args.out, force=args.force)
    except KdaliensError as e:
        print(f"kdaliens-keygen: error: {e}", file=sys.stderr)
        return 2
    kid = key_id(next(iter(public_keys([pub]).values())))
    print(f"kdaliens-keygen: key {kid}\n  secret: {key} (keep it off devices and out of version control)\n"
          f"  public: {pub} (ship it with the app; pass it as trusted_keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
