import json
import subprocess
import sys

import pytest

from featpipe.backbones import load_backbone
from featpipe.data import load_image_folder
from featpipe.errors import FeatpipeError
from featpipe.extraction import plan_extraction
from featpipe.parts import Part
from featpipe.worker import run_job


@pytest.fixture
def job(dataset, tiny_model_file, tmp_path):
    extraction = plan_extraction(load_image_folder(dataset), load_backbone(tiny_model_file), tmp_path / "cache",
                                 batch_size=4)
    extraction.workdir.open(extraction.manifest("CPU", 1, None, part_rows=4))
    return extraction


def test_a_worker_rebuilds_the_extraction_and_writes_its_parts(job):
    stats = run_job(job.to_json(), [Part("train", 4, 8), Part("test", 0, 4)])
    assert sorted(p.name for p in job.workdir.path.glob("*.h5")) == [
        "test-0000000000-0000000004.h5", "train-0000000004-0000000008.h5"]
    assert stats["write_seconds"] > 0


def test_a_worker_refuses_a_job_whose_dataset_changed(job, dataset):
    (dataset / "test" / "dog" / "dog.0.jpg").unlink()
    with pytest.raises(FeatpipeError, match="changed since this extraction was planned"):
        run_job(job.to_json(), [Part("train", 0, 4)])
    assert not list(job.workdir.path.glob("*.h5"))


@pytest.mark.slow
def test_worker_process_entry_point(job):
    request = {"job": job.to_json(), "parts": [["validation", 0, 4]], "threads": 1}
    done = subprocess.run([sys.executable, "-m", "featpipe.worker"], input=json.dumps(request), text=True,
                          capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in job.workdir.path.glob("*.h5")] == ["validation-0000000000-0000000004.h5"]
    request["job"]["key"] = "0" * 64
    refused = subprocess.run([sys.executable, "-m", "featpipe.worker"], input=json.dumps(request), text=True,
                             capture_output=True, timeout=300)
    assert refused.returncode == 1 and refused.stderr.strip().splitlines()[-1] == (
        "featpipe: error: the dataset or the base changed since this extraction was planned; run it again")
