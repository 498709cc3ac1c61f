"""What the two backends share: each algorithm's eligibility and error bound, the Winograd points
and filter cache, the transposed problems of the backward passes, the inf/NaN guard, the one
OpenBLAS both call and the workspace budget.  Nothing here knows which backends exist."""
