"""Result keys shared by the trainable, the searchers and the reports (dependency-free, one place)."""

OBJECTIVE = "val/objective"  # what every trial reports each epoch and every searcher optimises
TEST_OBJECTIVE = "test/objective"
DIVERGED = "diverged"  # a trial's last result is flagged with this when its loss became non-finite
FAILURE_REASON = "failure_reason"
