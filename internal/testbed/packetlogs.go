package testbed

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/nodefw/nodefw/internal/nflog"
)

// The agents' drop logs: each agent writes one JSON line per logged packet
// to its standard output, which goes to its log file with its standard
// error (Process.Log), as the agent pod's log holds both on a real node.

// LogOffset is the size of the process's log now: PacketLogs from it read
// only what the process writes after.
func (p *Process) LogOffset() (int64, error) {
	st, err := os.Stat(p.Log)
	if err != nil {
		return 0, err
	}
	return st.Size(), nil
}

// PacketLogs returns the drop-log lines the process wrote from offset on,
// in order: the lines whose "kind" is "packet". Other lines, and a last
// line not yet ended, are skipped.
func (p *Process) PacketLogs(offset int64) ([]nflog.Record, error) {
	f, err := os.Open(p.Log)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	if i := bytes.LastIndexByte(data, '\n'); i >= 0 {
		data = data[:i+1]
	} else {
		data = nil
	}
	var out []nflog.Record
	for _, line := range bytes.Split(data, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("{")) || !bytes.Contains(line, []byte(`"kind":"packet"`)) {
			continue
		}
		var r nflog.Record
		if err := json.Unmarshal(line, &r); err != nil {
			return nil, fmt.Errorf("%s: drop-log line %q: %w", p.Name, line, err)
		}
		out = append(out, r)
	}
	return out, nil
}
