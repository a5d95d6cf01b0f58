"""The operator's procedures: phases and their gates, rollback and replay, check, repair, archive, retire."""
