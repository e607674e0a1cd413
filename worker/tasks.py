"""Celery tasks: thin wrappers that take ids and delegate (Celery testing guide: logic lives elsewhere)."""

from __future__ import annotations

from celery import shared_task

from safetune.queue import TRAIN_TASK
from worker import pipeline


@shared_task(name=TRAIN_TASK, ignore_result=True)
def train_job(job_id: str) -> None:
    pipeline.run_job(job_id)
