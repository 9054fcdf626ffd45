"""``dynamicrafter ui``: serve the web UI (Gradio) on this machine.

Loads the model once and serves tabs Animate, Interpolate / Loop and Storyboard; jobs are queued and run one at a
time. Listens on 127.0.0.1 unless --host says otherwise; --share (a public gradio.live link) is never on by default.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dynamicrafter.cli.options import add_model_options, load_pipeline
from dynamicrafter.errors import UserError

EXAMPLES = """examples:
  dynamicrafter ui                                          # the built-in small model, http://127.0.0.1:7860
  dynamicrafter ui -c dynamicrafter_256/model.ckpt --port 8080
  dynamicrafter ui -c interp/model.ckpt --config 512_interp --host 0.0.0.0   # reachable from the network
  dynamicrafter ui --lora runs/lora/lora.safetensors:0.8    # with a LoRA adapter (repeatable), for every job

API (pip install gradio_client):
  from gradio_client import Client, handle_file
  video, download, seed, summary = Client("http://127.0.0.1:7860/").predict(
      image=handle_file("bear.png"), prompt="a bear walks", api_name="/animate")
"""


def add_parser(subparsers: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = subparsers.add_parser(name, help=help_text, description=__doc__, epilog=EXAMPLES,
                              formatter_class=argparse.RawTextHelpFormatter)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    g.add_argument("--port", type=int, help="port (default: 7860, or the next free one)")
    g.add_argument("--share", action="store_true", help="also create a public gradio.live link (needs internet)")
    g.add_argument("--output-dir", help="where generated videos are kept (default: a new temporary folder)")
    g.add_argument("--queue-size", type=int, default=16, help="jobs that may wait at most (default 16)")
    g = p.add_argument_group("input limits")
    g.add_argument("--max-image-pixels", type=int, default=4096 * 4096,
                   help="largest accepted image, in pixels (default 4096*4096)")
    g.add_argument("--max-image-bytes", type=int, default=20 * 1024 * 1024,
                   help="largest accepted upload, in bytes (default 20 MiB)")
    g.add_argument("--max-steps", type=int, default=100, help="largest number of sampling steps (default 100)")
    g.add_argument("--max-frames", type=int,
                   help="longest video in frames (default: twice the model's 16; beyond 16 sliding windows are used)")
    add_model_options(p)
    p.set_defaults(func=run_ui)


def run_ui(args: argparse.Namespace) -> int:
    from dynamicrafter.ui.config import UIConfig

    config = UIConfig(host=args.host, port=args.port, share=args.share, max_image_pixels=args.max_image_pixels,
                      max_image_bytes=args.max_image_bytes, max_steps=args.max_steps, max_frames=args.max_frames,
                      max_queue=args.queue_size, output_dir=Path(args.output_dir) if args.output_dir else None)
    try:
        from dynamicrafter.ui.app import build_app, launch
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] == "gradio":
            raise UserError("the web UI needs Gradio: pip install 'dynamicrafter[ui]'") from None
        raise
    from dynamicrafter.ui.service import ModelService

    service = ModelService(load_pipeline(args), config)
    print(f"{service.describe_model()}; videos are written to {service.output_dir}")
    if config.share:
        print("warning: --share makes the app reachable by anyone with the link")
    launch(build_app(service), service)
    return 0
