"""``lstmkit export CHECKPOINT``: ONNX and the NumPy runtime's format."""

from __future__ import annotations

from lstmkit.checkpoint import load


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("export", help="export a checkpoint to ONNX or to the NumPy "
                                                  "runtime (lstmkit.runtime)")
    parser.add_argument("checkpoint", help="a .safetensors checkpoint (lstmkit.checkpoint.save)")
    parser.add_argument("--onnx", metavar="OUT", help="write an ONNX model to OUT")
    parser.add_argument("--runtime", metavar="OUT",
                        help="write an .npz for lstmkit.runtime (NumPy only) to OUT")
    parser.add_argument("--no-lengths", action="store_true",
                        help="ONNX: no 'lengths' input (every sequence full length)")
    parser.add_argument("--no-state", action="store_true",
                        help="ONNX: no 'h0'/'c0' inputs (zero initial states)")
    parser.add_argument("--int8", action="store_true",
                        help="int8 weights: --onnx for ONNX Runtime's int8 kernels "
                             "(lstmkit.export.quantize), --runtime with int8 matrices "
                             "(lstmkit.quantize_dynamic)")
    parser.set_defaults(run=run)


def run(args) -> int:
    if not (args.onnx or args.runtime):
        raise ValueError("expected --onnx OUT and/or --runtime OUT, got neither")
    model = load(args.checkpoint)
    if args.onnx:
        if args.int8:
            from lstmkit.export.quantize import export_onnx_int8 as export_onnx
        else:
            from lstmkit.export.onnx import export_onnx

        export_onnx(model, args.onnx, lengths=not args.no_lengths,
                    initial_state=not args.no_state)
        print(f"wrote {args.onnx}")
    if args.runtime:
        from lstmkit.export.runtime import export_runtime
        from lstmkit.layers.quantized import quantize_dynamic

        export_runtime(quantize_dynamic(model, "reference") if args.int8 else model, args.runtime)
        print(f"wrote {args.runtime}")
    return 0
