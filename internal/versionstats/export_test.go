package versionstats

// ParseField is parseField, for the fuzz test.
var ParseField = parseField
