"""Stage orchestration: media decode, cache, runner, dataset assembly, trainer, bundles, CLIs."""
