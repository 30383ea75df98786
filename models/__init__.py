"""What stages load: classifiers, language models and LLM engines, resolved by
name to local files through `registry`. Models never import stages or the pipeline."""
