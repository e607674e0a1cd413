"""The `safetune` console script. Subcommands live in small modules; nothing here imports torch."""

from __future__ import annotations

import typer

from cli import admin, artifacts, demo, jobs, models, processes, watch

app = typer.Typer(
    name="safetune",
    help="Safety-preserving fine-tuning as a service: server, worker, jobs and admin.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

app.command()(processes.serve)
app.command()(processes.worker)
app.command("safety-align")(processes.safety_align)
app.command()(admin.migrate)
app.command("demo")(demo.run_demo)

app.command()(jobs.submit)
app.command()(jobs.status)
app.command("jobs")(jobs.list_jobs)
app.command()(jobs.cancel)
app.command()(watch.watch)
app.command()(artifacts.report)
app.command()(artifacts.download)

app.add_typer(admin.keys_app, name="keys")
app.add_typer(models.models_app, name="models")

if __name__ == "__main__":
    app()
