# The R half of an R replica: the runner (loaders.py) speaks frames and hands each
# request over as one JSON line on stdin; the answer goes back as one JSON line on its own pipe, so
# whatever the model prints on stdout or stderr lands in the replica log untouched.
#
#   Rscript replica.R FILE FUNCTION ANSWER_FD
args <- commandArgs(trailingOnly = TRUE)
suppressPackageStartupMessages(library(jsonlite))
# toJSON's own work is a wrapper around asJSON; calling asJSON halves the cost of an answer
encode <- if (exists("asJSON", envir = asNamespace("jsonlite"))) {
  function(x) jsonlite:::asJSON(x, auto_unbox = TRUE, null = "null", na = "null", digits = NA)
} else {
  function(x) toJSON(x, auto_unbox = TRUE, null = "null", na = "null", digits = NA)
}
answer <- file(paste0("/dev/fd/", args[3]), open = "w", raw = TRUE)

reply <- function(text) {
  cat(text, "\n", sep = "", file = answer)
  flush(answer)
}

# library(cdsw) for a model that uses it: installed from pylib/R/cdsw (R code only) into
# a library of this replica's own, in its /tmp
uses_cdsw <- tryCatch(any(grepl("cdsw", readLines(args[1], warn = FALSE), fixed = TRUE)),
                      error = function(e) FALSE)
if (uses_cdsw && !requireNamespace("cdsw", quietly = TRUE)) {
  here <- dirname(sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE)[1]))
  source_dir <- file.path(here, "..", "pylib", "R", "cdsw")
  lib <- file.path(tempdir(), "cdsw-library")
  dir.create(lib, showWarnings = FALSE)
  status <- system2(file.path(R.home("bin"), "R"),
                    c("CMD", "INSTALL", "--no-docs", "--no-html", "--no-multiarch",
                      "--no-test-load", "-l", shQuote(lib), shQuote(source_dir)),
                    stdout = FALSE, stderr = FALSE)
  if (status == 0) .libPaths(c(lib, .libPaths()))
}

loaded <- tryCatch({
  source(args[1], chdir = TRUE)
  fn <- get(args[2], mode = "function")
  TRUE
}, error = function(e) {
  reply(toJSON(list(ready = FALSE, error = conditionMessage(e)), auto_unbox = TRUE))
  FALSE
})
if (!loaded) quit(status = 3)
reply('{"ready": true}')

requests <- file("stdin", open = "r")
repeat {
  line <- readLines(requests, n = 1, warn = FALSE)
  if (length(line) == 0) break
  result <- tryCatch({
    request <- parse_json(line, simplifyVector = TRUE)
    value <- fn(request)
    encoded <- tryCatch(
      encode(value),
      error = function(e) structure(conditionMessage(e), class = "encode_error")
    )
    if (inherits(encoded, "encode_error")) {
      toJSON(list(ok = FALSE, code = "model.invalid_response",
                  error = paste("the function returned something that is not JSON:", encoded)),
             auto_unbox = TRUE)
    } else {
      paste0('{"ok": true, "result": ', encoded, "}")
    }
  }, error = function(e) {
    message("Error in ", deparse(conditionCall(e))[1], ": ", conditionMessage(e))
    toJSON(list(ok = FALSE, code = "model.error", error = conditionMessage(e)), auto_unbox = TRUE)
  })
  reply(result)
}
