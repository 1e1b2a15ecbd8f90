"""run_info.json says which code made a result, and on which kind of machine."""

import re

import torch

from behaviorlm.utils import PROJECT_ROOT, provenance


def test_provenance_names_library_versions_and_the_git_commit():
    info = provenance()
    assert info["versions"]["torch"] == torch.__version__
    assert info["machine"]["matrix_isa"] in ("amx_bf16", "avx512_bf16", "none")
    assert re.fullmatch(r"family \S+ model \S+", info["machine"]["cpu_family_model"])
    assert info["machine"]["threads"] == torch.get_num_threads()
    assert info["versions"]["hydra-core"] and info["versions"]["behaviorlm"]
    if (PROJECT_ROOT / ".git").exists():  # CI and developers run the tests inside a checkout
        assert re.fullmatch(r"[0-9a-f]{40}", info["git_commit"])
        assert isinstance(info["git_dirty"], bool)
    else:
        assert info["git_commit"] is None
