"""python scripts/activation_map.py --clip DIR --data DIR --query "Mannerheimintie" --out map.png [--split test]

Colour every image of a split by its similarity to an address query, drawn over the street network.
"""

from __future__ import annotations

import argparse
import sys

from llava_address.common.device import add_device_args, device_and_dtype


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clip", "--model", dest="clip", required=True, help="AddressCLIP checkpoint folder")
    ap.add_argument("--data", required=True, help="dataset folder")
    ap.add_argument("--query", required=True, help="address text: district, street or sub-street")
    ap.add_argument("--out", required=True, help="output PNG")
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    add_device_args(ap)
    args = ap.parse_args(argv)
    from llava_address.clip.activation_map import activation_map

    try:
        device, dtype = device_and_dtype(args, args.clip)
        df = activation_map(args.clip, args.data, args.query, args.out, args.split, device=device, dtype=dtype)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    top = df.nlargest(5, "similarity")[["sub_street", "similarity"]]
    print(f"wrote {args.out}; most similar images:\n{top.to_string(index=False)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
