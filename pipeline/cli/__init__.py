"""Console entry points: msa-extract, msa-predict, msa-train, msa-eval, msa-doctor."""
