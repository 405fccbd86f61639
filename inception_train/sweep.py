"""A Hydra callback that keeps a per-job status and a sweep summary, so a failed job loses nothing and is named.

Hydra runs every job of a `-m` sweep even when one fails (the failure is re-raised at the end, so the command still
exits non-zero). After each job this writes `status.json` into the job's dir and rewrites `sweep_summary.md` /
`sweep_summary.json` in the sweep dir: every job with its overrides, status, error and final/best errors.
Registered in conf/train.yaml under hydra.callbacks; it duck-types Hydra's Callback (the library never imports Hydra).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _job_row(job_dir: Path) -> dict:
    status = json.loads((job_dir / 'status.json').read_text()) if (job_dir / 'status.json').exists() else {}
    row = {'job': job_dir.name, 'status': status.get('status', 'not finished'), 'error': status.get('error')}
    metrics = job_dir / 'metrics.jsonl'
    rows = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    if rows:
        key = 'val_ema/top1_err' if 'val_ema/top1_err' in rows[-1] else 'val/top1_err'
        row.update(epochs=rows[-1]['epoch'], final_top1_err=rows[-1][key], best_top1_err=min(r[key] for r in rows))
    return row


def summarize_sweep(sweep_dir: Path) -> list[dict]:
    jobs = sorted((p for p in Path(sweep_dir).iterdir() if (p / '.hydra').is_dir()),
                  key=lambda p: (len(p.name.split('_')[0]), p.name))
    rows = [_job_row(p) for p in jobs]
    (Path(sweep_dir) / 'sweep_summary.json').write_text(json.dumps(rows, indent=2) + '\n')
    lines = ['| job | status | epochs | final top-1 err (%) | best top-1 err (%) | error |',
             '|---|---|---|---|---|---|']
    for r in rows:
        final, best = (f'{r[k]:.2f}' if k in r else '-' for k in ('final_top1_err', 'best_top1_err'))
        lines.append(f"| {r['job']} | {r['status']} | {r.get('epochs', '-')} | {final} | {best} | {r['error'] or ''} |")
    failed = [r['job'] for r in rows if r['status'] != 'ok']
    lines += ['', f'{len(rows) - len(failed)} of {len(rows)} jobs succeeded' +
              (f'; failed: {", ".join(failed)}' if failed else '')]
    (Path(sweep_dir) / 'sweep_summary.md').write_text('\n'.join(lines) + '\n')
    return rows


class SweepSummary:
    def on_job_end(self, config, job_return, **kwargs) -> None:
        job_dir = Path(config.hydra.runtime.output_dir)
        failed = job_return.status.name != 'COMPLETED'
        error = str(job_return._return_value).splitlines()[0][:300] if failed else None
        job_dir.mkdir(parents=True, exist_ok=True)
        (job_dir / 'status.json').write_text(json.dumps({'status': 'failed' if failed else 'ok', 'error': error,
                                                         'overrides': list(config.hydra.overrides.task)}) + '\n')
        if str(config.hydra.mode) == 'RunMode.MULTIRUN':
            rows = summarize_sweep(Path(config.hydra.sweep.dir))
            done = [r for r in rows if r['status'] != 'not finished']
            log.info('sweep: %d jobs done, failed: %s (summary: %s/sweep_summary.md)', len(done),
                     ', '.join(r['job'] for r in done if r['status'] == 'failed') or 'none', config.hydra.sweep.dir)

    # the other Hydra callback hooks: nothing to do
    def on_run_start(self, config, **kwargs) -> None: ...
    def on_run_end(self, config, **kwargs) -> None: ...
    def on_multirun_start(self, config, **kwargs) -> None: ...
    def on_multirun_end(self, config, **kwargs) -> None: ...
    def on_job_start(self, config, **kwargs) -> None: ...
    def on_compose_config(self, config, config_name, overrides) -> None: ...
