-- Reserved for snapshots and holds (issue 5); replaced by that work.
SELECT 1;
