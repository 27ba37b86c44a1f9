// SQL runner for Go's mattn/go-sqlite3 (the protocol: tests/hosts/README.md).
//
//	go build -tags libsqlite3 (GOPATH mode) && ./runner EXTENSION DB < steps.json > results.json
//
// The driver loads the extension into every connection it opens (SQLiteDriver.Extensions);
// all statements run on one pinned connection, so BEGIN and COMMIT meet.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"

	sqlite3 "github.com/mattn/go-sqlite3"
)

type result struct {
	Value *string `json:"value"`
	Error *string `json:"error,omitempty"`
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: runner EXTENSION DB < steps.json")
		os.Exit(2)
	}
	var steps []string
	if err := json.NewDecoder(os.Stdin).Decode(&steps); err != nil {
		fmt.Fprintln(os.Stderr, "runner: steps on stdin must be a JSON array of strings:", err)
		os.Exit(2)
	}
	sql.Register("sqlite3_litestream", &sqlite3.SQLiteDriver{Extensions: []string{os.Args[1]}})
	db, err := sql.Open("sqlite3_litestream", os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, "runner: open:", err)
		os.Exit(1)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "runner: connect (loads the extension):", err)
		os.Exit(1)
	}
	results := make([]result, 0, len(steps))
	for _, step := range steps {
		var value sql.NullString
		err := conn.QueryRowContext(ctx, step).Scan(&value)
		switch {
		case err == sql.ErrNoRows:
			results = append(results, result{})
		case err != nil:
			msg := err.Error()
			results = append(results, result{Error: &msg})
		case value.Valid:
			results = append(results, result{Value: &value.String})
		default:
			results = append(results, result{})
		}
	}
	conn.Close()
	db.Close()
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "runner:", err)
		os.Exit(1)
	}
}
