"""Risk before editing: predicted collateral damage of a deletion per probe fact (`kdel risk`), a learned
predictor fitted on audits (`kdel risk fit`), and the choice of method × site × layer (`kdel plan`)."""
