# The pipeline: train every configured run, then each dataset's table and figures. Rules only; the
# logic lives in bench/ (bench.config.files: the config files, checked, with their grids and variants;
# bench/report/: tables, figures, claims.md, findings.md).
#
#   snakemake --cores 2                          default target: the embedded grid (default_datasets)
#   snakemake --cores 8 results/cifar10_table.csv   one dataset: its runs, then its table
#   snakemake --cores 8 paper                    results/paper/: every table, figure and claims.md of
#                                                paper_datasets
#   snakemake --cores 2 --configfile config/sweep_ssa.yaml -- sweep   a sweep's table, figures, findings.md
#   snakemake -n paper                           plan without running
#   snakemake --report results/report.html       bundle the figures with captions
#
# `snakemake --lint` reports "Specify a conda environment or container for each rule" for the rules
# that run commands (train, table, figures, claims, sweep_report, beton, and the paper_* copies of table
# and figures). Deliberate: every rule runs this suite's own `python -m bench` in the one
# environment it is installed in (environment.yml or the pip venv); per-rule conda environments need
# `--sdm conda` and conda channels, which the suite's target machines do not have. Target-only rules
# (all, paper) have no log: a rule that runs nothing writes no log.
import os
import re
import shlex
import sys

from bench.config import grid, names
from bench.config.files import load_config
from bench.report.figures import FIGURES, FORMATS


DEFAULT_CONFIG_FILE = os.path.join(workflow.basedir, "config", "config.yaml")


configfile: DEFAULT_CONFIG_FILE


# In merge order: this file first, then each --configfile (Snakemake lists the command line's first).
CONFIG_FILES = [os.path.relpath(path) for path in dict.fromkeys(
    [os.path.abspath(DEFAULT_CONFIG_FILE), *map(os.path.abspath, workflow.configfiles)])]
try:
    # The files merged as Snakemake merged them, then `config` on top (its --config values); checked once:
    # the schema (config/schema.yaml), sweeps expanded into variants, then every method name, variant
    # option and recipe value by key. Variants and sweeps must be the files' own: the trainer reads them.
    CONFIG = load_config(CONFIG_FILES, config, plan=True)  # plan: a grid of a broken rule file is refused
except (ValueError, FileNotFoundError) as error:  # bad input: one line naming the key, exit 2, nothing run
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
GRIDS = CONFIG.grids
CONFIG_ARGS = " ".join(f"--config {shlex.quote(path)}" for path in CONFIG_FILES)  # for train, sweep-report
VARIANTS = CONFIG.variants  # the trainer's variants: the files' own plus every sweep point
LAYOUT = CONFIG.layout  # every path of the results folder (bench/layout.py)
RESULTS = LAYOUT.results
# Jobs run `$PYTHON -m bench`: the interpreter running Snakemake has bench installed, a bare `python`
# may not. A shell prefix, not a param, so that another path to the same venv reruns nothing.
# BENCH_GPU_SLOTS: runs sharing one GPU (bench/run/devices.py); a scheduling choice, so not a param either.
# CONFIG_ARGS: a bash array of the config files for the trainer; not a param (see rule train's `variant`).
shell.prefix(f"set -euo pipefail; PYTHON={shlex.quote(sys.executable)}; export BENCH_GPU_SLOTS={CONFIG.raw['gpu_slots']}; "
             f"CONFIG_ARGS=({CONFIG_ARGS}); ")


wildcard_constraints:
    dataset="|".join(map(re.escape, GRIDS)) or "(?!)",
    arch=names.PATTERN,
    method=names.PATTERN,  # the one rule for names (bench/config/names.py)
    seed=r"\d+",


report: "config/report/workflow.rst"


rule all:
    default_target: True
    message:
        f"tables and figures of default_datasets: {' '.join(CONFIG.raw['default_datasets'])}"
    input:
        expand(LAYOUT.table("{dataset}", "{ext}"), dataset=CONFIG.raw["default_datasets"], ext=["csv", "md"]),
        expand(LAYOUT.figure("{dataset}", "{name}", "{ext}"), dataset=CONFIG.raw["default_datasets"],
               name=FIGURES, ext=FORMATS),


rule paper:
    message:
        f"{RESULTS}/paper/: tables, figures and claims.md of paper_datasets: {' '.join(CONFIG.raw['paper_datasets'])}"
    input:
        LAYOUT.claims(),
        expand(LAYOUT.table("{dataset}", "{ext}", paper=True), dataset=CONFIG.raw["paper_datasets"], ext=["csv", "md"]),
        expand(LAYOUT.figure("{dataset}", "{name}", "{ext}", paper=True), dataset=CONFIG.raw["paper_datasets"],
               name=FIGURES, ext=FORMATS),


rule train:
    message:
        "train {wildcards.method} on {wildcards.dataset}/{wildcards.arch}, seed {wildcards.seed}"
    input:
        # imagenet runs read FFCV .beton files written by rule beton; other datasets need none.
        betons=lambda wildcards: grid.run_inputs(wildcards.dataset, CONFIG.raw["data_dir"],
                                                 GRIDS[wildcards.dataset].recipe_for(wildcards.method)),
        # The rule's own file, tracked by git or not: an edited rule reruns its runs.
        method=lambda wildcards: grid.method_source(wildcards.method, VARIANTS),
    output:
        record=LAYOUT.record("{dataset}", "{arch}", "{method}", "{seed}"),
    log:
        LAYOUT.train_log("{dataset}", "{arch}", "{method}", "{seed}"),
    benchmark:
        LAYOUT.benchmark("{dataset}", "{arch}", "{method}", "{seed}")
    params:
        out=lambda wildcards, output: os.path.dirname(output.record),
        recipe=lambda wildcards: GRIDS[wildcards.dataset].set_args(wildcards.method),
        # What the run takes from the config files is its variant (the trainer reads it from them: $CONFIG_ARGS
        # in the shell prefix); a param of its own, so another --configfile reruns only what it changes.
        variant=lambda wildcards: grid.variant_definition(wildcards.method, VARIANTS),
        data_dir=CONFIG.raw["data_dir"],
    # One thread per run (Snakemake sets OMP_NUM_THREADS from it): `--cores N` runs N runs side by side.
    threads: 1
    shell:
        "$PYTHON -m bench train --dataset {wildcards.dataset:q} --arch {wildcards.arch:q}"
        " --method {wildcards.method:q} --seed {wildcards.seed:q} --out {params.out:q}"
        " \"${{CONFIG_ARGS[@]}}\" --data-dir {params.data_dir:q} {params.recipe} > {log:q} 2>&1"


rule table:
    message:
        "table of {wildcards.dataset}: {output.csv}"
    input:
        records=lambda wildcards: GRIDS[wildcards.dataset].record_paths(RESULTS),
    output:
        csv=report(LAYOUT.table("{dataset}", "csv"), caption="config/report/table.rst", category="{dataset}",
                   subcategory="table"),
        md=LAYOUT.table("{dataset}", "md"),
    log:
        LAYOUT.log("table", "{dataset}"),
    params:
        runs=LAYOUT.runs,
        out=lambda wildcards, output: os.path.dirname(output.csv) or ".",
        archs=lambda wildcards: GRIDS[wildcards.dataset].archs,
        methods=lambda wildcards: GRIDS[wildcards.dataset].methods,
        seeds=lambda wildcards: GRIDS[wildcards.dataset].seeds,
        published=lambda wildcards: GRIDS[wildcards.dataset].published_args(),
    shell:
        "$PYTHON -m bench aggregate --runs-dir {params.runs:q} --dataset {wildcards.dataset:q}"
        " --out-dir {params.out:q} --archs {params.archs:q} --methods {params.methods:q} --seeds {params.seeds:q}"
        " {params.published} > {log:q} 2>&1"


rule figures:
    message:
        "figures of {wildcards.dataset}"
    input:
        records=lambda wildcards: GRIDS[wildcards.dataset].record_paths(RESULTS),
    output:
        [report(LAYOUT.figure("{dataset}", name, "png"), caption=f"config/report/{name}.rst",
                category="{dataset}", subcategory="figures") for name in FIGURES],
        expand(LAYOUT.figure("{dataset}", "{name}", "pdf"), name=FIGURES, allow_missing=True),
    log:
        LAYOUT.log("figures", "{dataset}"),
    params:
        runs=LAYOUT.runs,
        out=lambda wildcards, output: os.path.dirname(output[0]),
        archs=lambda wildcards: GRIDS[wildcards.dataset].archs,
        methods=lambda wildcards: GRIDS[wildcards.dataset].methods,
        seeds=lambda wildcards: GRIDS[wildcards.dataset].seeds,
    shell:
        "$PYTHON -m bench plot --runs-dir {params.runs:q} --dataset {wildcards.dataset:q}"
        " --out-dir {params.out:q} --archs {params.archs:q} --methods {params.methods:q} --seeds {params.seeds:q}"
        " > {log:q} 2>&1"


rule sweep:
    message:
        f"sweep tables, sensitivity figures and findings.md of sweep_datasets: {' '.join(CONFIG.raw['sweep_datasets'])}"
    input:
        expand(LAYOUT.sweep("{dataset}") + "/findings.md", dataset=CONFIG.raw["sweep_datasets"]),


rule sweep_report:
    message:
        "sweep report of {wildcards.dataset}: {output.findings}"
    input:
        records=lambda wildcards: GRIDS[wildcards.dataset].record_paths(RESULTS),
    output:
        findings=report(LAYOUT.sweep("{dataset}") + "/findings.md", caption="config/report/findings.rst",
                        category="sweep"),
        tables=expand(LAYOUT.sweep("{dataset}") + "/{dataset}_sweep.{ext}", ext=["csv", "md"], allow_missing=True),
        figures=[LAYOUT.sweep("{dataset}") + f"/figures/{{dataset}}_{name}_{option}.{ext}"
                 for name, entry in CONFIG.sweeps.items() for option in entry["options"]
                 for ext in FORMATS],
    log:
        LAYOUT.log("sweep", "{dataset}"),
    params:
        config_files=CONFIG_ARGS,
        out=lambda wildcards, output: os.path.dirname(output.findings),
    shell:
        "$PYTHON -m bench sweep-report --dataset {wildcards.dataset:q} {params.config_files}"
        " --records {input.records:q} --out-dir {params.out:q} > {log:q} 2>&1"


# The paper target's own copies, written into {RESULTS}/paper/ by the same commands from the same records.
use rule table as paper_table with:
    output:
        csv=LAYOUT.table("{dataset}", "csv", paper=True),
        md=LAYOUT.table("{dataset}", "md", paper=True),
    log:
        LAYOUT.log("paper", "table", "{dataset}"),


use rule figures as paper_figures with:
    output:
        expand(LAYOUT.figure("{dataset}", "{name}", "{ext}", paper=True), name=FIGURES, ext=FORMATS,
               allow_missing=True),
    log:
        LAYOUT.log("paper", "figures", "{dataset}"),


rule claims:
    message:
        f"claims.md: the paper's claims checked against the records of {' '.join(CONFIG.raw['paper_datasets'])}"
    input:
        records=[path for dataset in CONFIG.raw["paper_datasets"] for path in GRIDS[dataset].record_paths(RESULTS)],
    output:
        claims=report(LAYOUT.claims(), caption="config/report/claims.rst", category="claims"),
    log:
        LAYOUT.log("paper", "claims"),
    params:
        datasets=CONFIG.raw["paper_datasets"],
    shell:
        "$PYTHON -m bench claims --datasets {params.datasets:q} --records {input.records:q} --out {output.claims:q}"
        " > {log:q} 2>&1"


rule beton:
    message:
        "write {output.beton} from {params.data_dir}/{wildcards.name}/{wildcards.split}"
    output:
        beton=f"{CONFIG.raw['data_dir']}/ffcv/{{name}}/{{split}}_{{max_res}}_{{proportion}}_{{quality}}.beton",
    log:
        LAYOUT.log("beton", "{name}", "{split}_{max_res}_{proportion}_{quality}"),
    wildcard_constraints:
        split=r"train|val|test",
        max_res=r"\d+",
        proportion=r"[01]\.\d\d",
        quality=r"\d+",
    params:
        # DATA_DIR/ffcv/<name>/<file>.beton -> DATA_DIR (derived from the output, so never retyped)
        data_dir=lambda wildcards, output: os.path.dirname(os.path.dirname(os.path.dirname(output.beton))),
    threads: 2
    shell:
        "NUMBA_THREADING_LAYER=omp $PYTHON -m bench beton --dataset {wildcards.name:q} --split {wildcards.split:q}"
        " --data-dir {params.data_dir:q} --max-res {wildcards.max_res:q} --jpeg-proportion {wildcards.proportion:q}"
        " --quality {wildcards.quality:q} --workers {threads} --out {output.beton:q} > {log:q} 2>&1"
