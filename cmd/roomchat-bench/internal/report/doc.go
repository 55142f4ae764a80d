// Package report is roomchat-bench's results: the records each measuring
// command emits (Fanout, Ratio, Idle, Churn), printed by Writer as a table
// or as JSON lines and appended to a results file; and what is made of such
// a file afterwards: an SVG chart of p99 latency against offered load
// (WriteChart) and the check of the numbers against the performance budget
// of docs/benchmarks.md (WriteSummary).
//
// A results file holds one JSON object per line, each with a "kind":
// "fanout" (one measured window), "fanout-max" (a find-max search),
// "ratio" (one target's figure over another's), "idle" or "churn". Readers
// skip lines that are not JSON objects, so a file may carry notes.
package report
