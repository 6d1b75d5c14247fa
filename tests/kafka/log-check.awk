# The chaos suite's check of the topic read back whole (log.txt: one
# "partition offset headers" line per record, headers "name=value,...",
# as `kcat -f '%p %o %h\n'` prints them). Prints one line:
#   log: records=N distinct_ids=N duplicate_records=N resent_duplicates=N no_id=N [e.g. ...]
# A message re-sent by a producer's fatal-error recovery may be in the log
# twice (or more, one per recovery): every re-sent copy carries rbk-resent,
# the first attempt does not, and it may come before or after the re-sent
# copy (a request of the replaced librdkafka instance that reaches a broker
# late is still appended). Those repeats are resent_duplicates; an unmarked
# copy past the first of an id is a duplicate_record.
  { id = ""; resent = 0; n = split($3, h, ",")
    for (i = 1; i <= n; i++) {
      if (h[i] ~ /^rbk-id=/) id = substr(h[i], 8)
      else if (h[i] ~ /^rbk-resent=/) resent = 1 }
    recs++
    if (id == "") { noid++; next }
    if (resent) marked[id]++; else unmarked[id]++
    if (id in seen) at[id] = at[id] "," $1 "/" $2
    else { seen[id] = $1 "/" $2; ids++ } }
  END { for (id in at) {
          # every marked copy is a re-send; an unmarked one past the first is not
          d = unmarked[id] > 1 ? unmarked[id] - 1 : 0
          rdup += marked[id] + unmarked[id] - 1 - d
          if (d) { dup += d; if (++neg <= 5) eg = eg " " id "@" substr(at[id], 2) "(first " seen[id] ")" } }
        printf "log: records=%d distinct_ids=%d duplicate_records=%d resent_duplicates=%d no_id=%d%s\n",
          recs, ids, dup, rdup, noid, (eg != "" ? " e.g." eg : "") }
