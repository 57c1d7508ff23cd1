"""Kaldi's ``conf/slurm.conf`` format: how ``slurm.pl`` options become ``sbatch`` options.

::

    command sbatch --export=PATH            # the submit command and the options every job gets
    option mem=* --mem=$0                   # --mem 4G  ->  --mem=4G   ($0 is the value)
    option mem=0                            # --mem 0   ->  nothing
    option gpu=* --gres=gpu:$0              # --gpu 2   ->  --gres=gpu:2
    default gpu=0                           # as if --gpu 0 were given when it is not

Comments start with ``#``. An option the config does not describe is an error (as in Kaldi), so a site's
``--partition`` or ``--account`` go into its config file, never into code."""
from __future__ import annotations

import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional

from s3tok.jobs.spec import JobsError

logger = logging.getLogger("s3tok.jobs.slurm_config")

# Kaldi's built-in slurm.pl config, less its site-specific partitions (-p shared, -p gpu); --mem is per job.
DEFAULT_CONFIG = """\
command sbatch --export=PATH --ntasks-per-node=1
option time=* --time=$0
option mem=* --mem=$0
option mem=0          # no --mem: the partition's default
option num_threads=* --cpus-per-task=$0 --ntasks-per-node=1
option num_threads=1 --cpus-per-task=1 --ntasks-per-node=1
default gpu=0
option gpu=0
option gpu=* --gres=gpu:$0
"""


def _name(option: str) -> str:
    """``--num-threads`` and ``num_threads`` are the same option."""
    return option.lstrip("-").replace("-", "_")


@dataclass
class SlurmConfig:
    """A parsed config: the submit command, per-option rules (value -> sbatch words, ``*`` for any value,
    where ``$0`` stands for the value) and defaults."""

    command: List[str] = field(default_factory=lambda: ["sbatch"])
    options: Dict[str, Dict[str, List[str]]] = field(default_factory=dict)
    defaults: Dict[str, str] = field(default_factory=dict)
    source: str = "<default>"

    @classmethod
    def parse(cls, text: str, source: str = "<string>") -> "SlurmConfig":
        config = cls(command=[], source=source)
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            where = f"{source}:{lineno}"
            try:
                words = shlex.split(line)
            except ValueError as e:
                raise JobsError(f"{where}: {e}: {raw}") from None
            key, rest = words[0], words[1:]
            if key == "command":
                if not rest:
                    raise JobsError(f"{where}: 'command' needs a program: {raw}")
                config.command = rest
            elif key in ("option", "default"):
                if not rest or "=" not in rest[0]:
                    raise JobsError(f"{where}: expected '{key} name=value ...': {raw}")
                name, value = rest[0].split("=", 1)
                if key == "default":
                    if len(rest) > 1:
                        raise JobsError(f"{where}: 'default' takes only name=value: {raw}")
                    config.defaults[_name(name)] = value
                else:
                    config.options.setdefault(_name(name), {})[value] = rest[1:]
            else:
                raise JobsError(f"{where}: unknown line (expected command, option or default): {raw}")
        if not config.command:
            raise JobsError(f"{source}: no 'command' line (e.g. 'command sbatch --export=PATH')")
        return config

    @classmethod
    def load(cls, path: Optional[str]) -> "SlurmConfig":
        """The config in ``path``, or :data:`DEFAULT_CONFIG` when ``path`` is None."""
        if path is None:
            return cls.parse(DEFAULT_CONFIG, "<default>")
        try:
            text = Path(path).read_text()
        except OSError as e:
            raise JobsError(f"cannot read config {path}: {e.strerror}") from None
        logger.debug("slurm.pl: config %s", path)
        return cls.parse(text, path)

    def sbatch_options(self, given: Mapping[str, str]) -> List[str]:
        """The sbatch words for the options ``given`` (name -> value) plus the defaults not given."""
        values = dict(self.defaults)
        values.update({_name(k): v for k, v in given.items()})
        out: List[str] = []
        for name, value in values.items():
            out += self._expand(name, value)
        return out

    def _expand(self, name: str, value: str) -> List[str]:
        rules = self.options.get(name)
        if rules is None:
            raise JobsError(f"option --{name.replace('_', '-')} {value} is not described in {self.source} "
                            f"(add e.g. 'option {name}=* ...' there)")
        if value in rules:
            words = rules[value]
        elif "*" in rules:
            words = rules["*"]
        else:
            raise JobsError(f"option --{name.replace('_', '-')}: value {value} not allowed by {self.source} "
                            f"(allowed: {' '.join(sorted(rules))})")
        return [w.replace("$0", value) for w in words]

    def describes(self, name: str) -> bool:
        return _name(name) in self.options

