package main

import "testing"

func TestParseMetrics(t *testing.T) {
	m := parseMetrics([]byte("# HELP go_goroutines x\n# TYPE go_goroutines gauge\ngo_goroutines 42\n" +
		"process_resident_memory_bytes 1.2345e+07\nfoo{a=\"1\"} 2\nfoo{a=\"2\"} 3\n"))
	if m["go_goroutines"] != 42 || m["process_resident_memory_bytes"] != 12345000 || m["foo"] != 5 {
		t.Errorf("parseMetrics = %v", m)
	}
}
