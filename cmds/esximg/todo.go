package main

import (
	"errors"
	"io"
)

func inspect(args []string, stdout, stderr io.Writer) (int, error) {
	return 2, errors.New("not implemented yet")
}
