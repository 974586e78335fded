"""`python -m bpfs.emulator`: run the local Basepair emulator in the foreground.

Why: to poke at the emulated account by hand (curl, the official client, `bpfs mount -c`)
without writing a test. It prints the URLs, writes `config-v1.json` and `config-v3.json` into
`--dir` (or a temporary directory removed on exit) and serves until Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import pathlib
import signal
import sys
import tempfile
import threading
import time

from bpfs.emulator import Emulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bpfs.emulator", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="data directory (objects, configs); kept, and reused on the next start")
    parser.add_argument("--extra-analyses", type=int, default=0, metavar="N",
                        help="add N small completed analyses (listing-scale tests)")
    parser.add_argument("--big-file-mib", type=int, default=64, metavar="MIB", help="size of the large bigWig")
    parser.add_argument("--bam-reads", type=int, default=60000, metavar="N", help="reads in analysis 10000's BAM")
    parser.add_argument("--v1-bare-lists", action="store_true", help="answer v1 lists as bare JSON arrays")
    parser.add_argument("--api-port", type=int, default=0, help="REST port (default: any free port)")
    parser.add_argument("--s3-port", type=int, default=0, help="S3 port (default: any free port)")
    parser.add_argument("--s3-latency-ms", type=float, default=0, metavar="MS",
                        help="S3 waits MS before answering any request (real S3: ~10-50 ms to the first byte)")
    parser.add_argument("--s3-mbps", type=float, default=0, metavar="MB/S",
                        help="cap each S3 GET or upload body at MB/S, per request (real S3: ~100 per connection)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    temp = None
    if args.dir is None:
        temp = tempfile.TemporaryDirectory(prefix="bpfs-emulator-")
        config_dir = pathlib.Path(temp.name)
        data_dir = None  # the Emulator makes and removes its own data dir
    else:
        config_dir = pathlib.Path(args.dir)
        data_dir = config_dir
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    emulator = Emulator(
        data_dir=data_dir,
        extra_analyses=args.extra_analyses,
        big_file_mib=args.big_file_mib,
        bam_reads=args.bam_reads,
        v1_bare_lists=args.v1_bare_lists,
        api_port=args.api_port,
        s3_port=args.s3_port,
    )
    try:
        emulator.start()
        if args.s3_latency_ms:
            emulator.s3.latency = args.s3_latency_ms / 1000
        if args.s3_mbps:
            emulator.s3.bandwidth = args.s3_mbps * 1e6
        v1 = emulator.write_config(config_dir / "config-v1.json", "v1")
        v3 = emulator.write_config(config_dir / "config-v3.json", "v3")
        print(f"Basepair emulator ready in {time.monotonic() - started:.1f} s", flush=True)
        print(f"  API (v3)  {emulator.api_url}api/v3/")
        print(f"  API (v1)  {emulator.api_url}api/v1/")
        print(f"  S3        {emulator.s3_url}  bucket {emulator.bucket}")
        print(f"  user      {emulator.username} (id {emulator.user_id})")
        print(f"  config    {v1}")
        print(f"  config    {v3}")
        print("Ctrl-C stops.", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        if temp is not None:
            temp.cleanup()
    print("stopped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
