import io

from flowexport.commands.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_draws_on_a_terminal() -> None:
    stream = Terminal()
    bar = ProgressBar(stream, total=4, label="uploading", unit="batches", width=8)
    bar.advance()
    bar.advance(3)
    bar.close()
    assert stream.getvalue() == (
        "\ruploading [##......] 1/4 batches\ruploading [########] 4/4 batches\n"
    )


def test_silent_elsewhere() -> None:
    stream = io.StringIO()
    bar = ProgressBar(stream, total=4, label="uploading", unit="batches")
    bar.advance()
    bar.close()
    assert stream.getvalue() == ""
