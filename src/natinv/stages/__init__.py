"""The stage runners: one module per stage of the table in natinv.pipeline. Each reads its inputs through the file
contract (natinv.paths), calls the library, writes its declared outputs and returns an Outcome for MLflow."""
