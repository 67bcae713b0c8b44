"""Faults during a 6-step SwD run (an interrupt at each step, an exception and an out-of-memory error raised by the
model mid-run): the run stops with the fault, the server keeps serving, and the next valid prompt gives exactly the
result it gave before any fault."""
import uuid

import pytest
import torch

from comfy_harness import PromptError
from test_swd_sampler import swd_prompt

STEPS = 6


def run_prompt(fault=None, at_call=0):
    """The 6-step preset on tiny SD3; a unique call-log file (and fault tag) makes ComfyUI execute it again instead
    of answering from its cache."""
    prompt = swd_prompt("sd3", "SD3.5 Medium · 6 steps", seed=17, width=128, height=128,
                        call_log=f"faults_{uuid.uuid4().hex}.jsonl", tag="faults")
    if fault:
        prompt["fault"] = {"class_type": "SwDTestFault", "inputs": {"model": ["calllog", 0], "fault": fault,
                                                                    "at_call": at_call, "tag": uuid.uuid4().hex}}
        prompt["swd"]["inputs"]["model"] = ["fault", 0]
    return prompt


@pytest.fixture(scope="module")
def reference(comfy):
    return comfy.run(run_prompt()).latent("save")


def assert_next_prompt_matches(comfy, reference):
    assert torch.equal(comfy.run(run_prompt()).latent("save"), reference)


@pytest.mark.parametrize("step", range(STEPS))
def test_interrupt_at_each_step_stops_the_run_and_the_next_prompt_matches(comfy, reference, step):
    messages, _ = comfy.run_watching(run_prompt("interrupt", at_call=step), timeout=120)
    assert messages[-1]["type"] == "execution_interrupted"
    progress = [m["data"]["value"] for m in messages if m["type"] == "progress" and m["data"]["node"] == "swd"]
    assert progress == list(range(1, step + 1))  # stopped right after the interrupted step, before reporting it
    assert_next_prompt_matches(comfy, reference)


@pytest.mark.parametrize("fault, text", [("exception", "injected fault at model call 3"),
                                         ("oom", "simulated out of memory at model call 3")])
def test_a_fault_raised_by_the_model_mid_run_is_reported_and_the_next_prompt_matches(comfy, reference, fault, text):
    with pytest.raises(PromptError) as e:
        comfy.run(run_prompt(fault, at_call=3), timeout=120)
    assert text in e.value.message
    assert e.value.details["node_type"] == "SwDKSampler"
    assert_next_prompt_matches(comfy, reference)
