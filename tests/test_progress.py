import io

from featpipe.progress import Progress


class FakeTTY(io.StringIO):
    def isatty(self):
        return True


def test_batch_job_gets_log_lines():
    stream = io.StringIO()
    progress = Progress(10, "train", stream=stream, interval=0)
    progress.update(4)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "train: 4/10 images" in lines[0] and "ETA" in lines[0]
    assert "train: 4/10 images" in lines[1] and "ETA" not in lines[1]


def test_terminal_gets_one_rewritten_line():
    stream = FakeTTY()
    progress = Progress(3, "test", stream=stream)
    progress.update(3)
    progress.close()
    assert stream.getvalue().startswith("\r\033[K") and stream.getvalue().endswith("\n")
    assert "\n" not in stream.getvalue()[:-1]
