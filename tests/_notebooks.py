"""Running a stored notebook in a fresh kernel, for the notebook tests of every subpackage."""

import pathlib

import pytest

NOTEBOOKS = pathlib.Path(__file__).resolve().parents[1] / "notebooks"


def run_notebook(name: str, workdir, timeout: int = 600):
    """Execute ``notebooks/<name>`` in ``workdir``; return ``(notebook, stdout)``.

    Fails the calling test on any error output (nbclient raises CellExecutionError on a failing
    cell); ``stdout`` is every code cell's printed text, in order. Skips when nbformat /
    nbclient / ipykernel are not installed.
    """
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    client.execute()
    text = ""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            assert output.get("output_type") != "error"
            if output.get("output_type") == "stream" and output.get("name") == "stdout":
                text += output["text"]
    return nb, text
