"""Pure logic of the workflows toolset: states of a tree, size checks, step models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from celery_mcp.errors import InvalidArgument
from celery_mcp.models.workflows import ChordInput, MapInput, WorkflowStep
from celery_mcp.service.workflows import (
    chain_states,
    check_publish_budget,
    check_size,
    overall_state,
    parallel_state,
)


def test_chain_steps_after_a_failure_read_not_run() -> None:
    states, failed_at = chain_states(["SUCCESS", "FAILURE", "FAILURE", "FAILURE"])
    assert states == ["SUCCESS", "FAILURE", "NOT_RUN", "NOT_RUN"] and failed_at == 1


def test_chain_without_failure_is_unchanged() -> None:
    assert chain_states(["SUCCESS", "STARTED", "PENDING"]) == (
        ["SUCCESS", "STARTED", "PENDING"],
        None,
    )


def test_chain_state_follows_the_last_step_or_the_failure() -> None:
    assert overall_state("chain", ["SUCCESS", "SUCCESS"], None) == ("SUCCESS", True)
    assert overall_state("chain", ["SUCCESS", "PENDING"], None) == ("STARTED", False)
    assert overall_state("chain", ["PENDING", "PENDING"], None) == ("PENDING", False)
    assert overall_state("chain", ["SUCCESS", "FAILURE", "NOT_RUN"], None) == ("FAILURE", True)


def test_parallel_tasks_are_ready_only_when_all_are() -> None:
    assert parallel_state(["SUCCESS", "STARTED"]) == ("STARTED", False)
    assert parallel_state(["PENDING", "PENDING"]) == ("PENDING", False)
    assert parallel_state(["SUCCESS", "SUCCESS"]) == ("SUCCESS", True)
    assert parallel_state(["SUCCESS", "FAILURE"]) == ("FAILURE", True)
    assert parallel_state(["REVOKED", "SUCCESS"]) == ("FAILURE", True)


def test_chord_state_is_the_callbacks_once_it_is_ready() -> None:
    assert overall_state("chord", ["SUCCESS", "FAILURE"], "PENDING") == ("STARTED", False)
    assert overall_state("chord", ["SUCCESS", "FAILURE"], "FAILURE") == ("FAILURE", True)
    assert overall_state("map", ["SUCCESS"], "SUCCESS") == ("SUCCESS", True)
    assert overall_state("map", ["PENDING"], "PENDING") == ("PENDING", False)


def test_empty_and_oversized_workflows_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="empty workflow: steps is an empty list"):
        check_size(0, "steps", 10)
    with pytest.raises(InvalidArgument, match="11 tasks is over the cap of 10"):
        check_size(11, "items", 10)
    check_size(10, "items", 10)


def test_step_schema_is_compact_but_validation_keeps_send_task_bounds() -> None:
    schema = WorkflowStep.model_json_schema()
    assert schema["properties"]["priority"] == {"type": "integer"}
    assert "pattern" not in schema["properties"]["task_name"]
    with pytest.raises(ValidationError, match="priority"):
        WorkflowStep(task_name="demo.add", priority=10)
    with pytest.raises(ValidationError, match="countdown or eta"):
        WorkflowStep.model_validate(
            {"task_name": "demo.add", "countdown": 1, "eta": "2030-01-01T00:00:00Z"}
        )
    with pytest.raises(ValidationError, match="task_name"):
        WorkflowStep(task_name="not a name")


def test_workflow_inputs_refuse_unknown_fields_and_bad_chunks() -> None:
    with pytest.raises(ValidationError, match="nope"):
        ChordInput.model_validate({"header": [], "callback": {"task_name": "a"}, "nope": 1})
    with pytest.raises(ValidationError, match="chunk_size"):
        MapInput(task_name="demo.add", items=[[1, 2]], chunk_size=0)
    with pytest.raises(ValidationError, match="retries"):
        MapInput.model_validate({"task_name": "demo.add", "items": [], "options": {"retries": 99}})


def test_more_messages_than_one_call_can_publish_are_refused_with_a_chunk_hint() -> None:
    check_publish_budget("group", 2000, 2000, 10.0)
    with pytest.raises(InvalidArgument, match="2001 messages") as refused:
        check_publish_budget("map", 2001, 2001, 10.0)
    assert "chunk_size=3 or more" in str(refused.value)
    with pytest.raises(InvalidArgument, match="at most 200 fit") as refused:
        check_publish_budget("chord", 500, 500, 1.0)
    assert "split it" in str(refused.value)
