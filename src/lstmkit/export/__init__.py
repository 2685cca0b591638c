"""Exporters: ONNX (standard recurrent operators where they fit, Scan where not) and the NumPy
runtime's format. onnx is imported only when an ONNX export is asked for."""

from lstmkit.export.runtime import export_runtime


def export_onnx(model, path, **options):
    """See :func:`lstmkit.export.onnx.export_onnx`."""
    from lstmkit.export.onnx import export_onnx as export

    return export(model, path, **options)


__all__ = ["export_onnx", "export_runtime"]
