"""The report's parts: collect gathers the results, plots draws the figures, markdown writes the tables (identity: which
paper method each configured method is), html the self-contained page of report.md, headline the few numbers per
method that DVC and MLflow show first, charts the curves as DVC plots. The stage that puts them together is
natinv.stages.report; importing a part imports only what that part needs (charts: no torch)."""
