# library(cdsw) for R replicas and runs of cdsw-tui, as CDSW's R library is used:
#   track.metric(key, value), track.file(path)      (CDSW: experiments and jobs)
#   call.model(model.access.key, ipt)               (a deployed model, through the gateway)
#   read.metrics(model.crn, ...)                    (the metrics service of the gateway)
# The gateway is at CDSW_API_URL's host (inside a container, its forwarder at 127.0.0.1).
# Plain HTTP over a socket connection: base R has no HTTP POST of its own, and the
# engines carry jsonlite only.

.gateway <- function() {
  url <- Sys.getenv("CDSW_API_URL", "http://127.0.0.1:8787/api/v1")
  parts <- regmatches(url, regexec("^(https?)://([^/:]+)(:([0-9]+))?(/.*)?$", url))[[1]]
  if (length(parts) == 0) stop("CDSW_API_URL is not a URL: ", url)
  if (parts[2] == "https") {
    stop("the gateway serves HTTPS; R's cdsw library speaks plain HTTP only (call it from Python)")
  }
  port <- if (nzchar(parts[5])) as.integer(parts[5]) else 80L
  list(host = parts[3], port = port)
}

.post <- function(path, body, headers = character()) {
  where <- .gateway()
  text <- enc2utf8(as.character(toJSON(body, auto_unbox = TRUE, null = "null", digits = NA)))
  size <- length(charToRaw(text))
  con <- socketConnection(where$host, where$port, blocking = TRUE, open = "r+b", timeout = 60)
  on.exit(close(con))
  head <- c(
    paste("POST", path, "HTTP/1.0"),
    paste0("Host: ", where$host, ":", where$port),
    "Content-Type: application/json",
    paste0("Content-Length: ", size),
    headers,
    "",
    ""
  )
  writeBin(c(charToRaw(paste(head, collapse = "\r\n")), charToRaw(text)), con)
  raw <- raw(0)
  repeat {
    chunk <- readBin(con, "raw", 65536)
    if (length(chunk) == 0) break
    raw <- c(raw, chunk)
  }
  answer <- rawToChar(raw)
  split <- regexpr("\r\n\r\n", answer, fixed = TRUE)
  status <- as.integer(sub("^HTTP/[0-9.]+ ([0-9]+).*", "\\1", substr(answer, 1, 40)))
  list(status = status, body = fromJSON(substring(answer, split + 4), simplifyVector = FALSE))
}

track.metric <- function(key, value) {
  message("cdsw: metric ", key, " = ", paste(format(value), collapse = " "))
  invisible(NULL)
}

track.file <- function(path) {
  message("cdsw.track.file: ", path, " stays in the project (no separate copy is kept)")
  invisible(NULL)
}

call.model <- function(model.access.key, ipt, api.key = NULL) {
  headers <- if (is.null(api.key)) character() else paste("Authorization: Bearer", api.key)
  .post("/model", list(accessKey = model.access.key, request = ipt), headers)$body
}

read.metrics <- function(model.crn = NULL, model.deployment.crn = NULL,
                         start.timestamp.ms = NULL, end.timestamp.ms = NULL) {
  token <- Sys.getenv("CDSW_METRICS_TOKEN")
  if (!nzchar(token)) stop("no metrics token: CDSW_METRICS_TOKEN is not set")
  body <- list(model_crn = model.crn, model_deployment_crn = model.deployment.crn,
               start_timestamp_ms = start.timestamp.ms, end_timestamp_ms = end.timestamp.ms)
  body <- body[!vapply(body, is.null, logical(1))]
  answer <- .post("/api/v1/metrics/read", body, paste("Authorization: Bearer", token))
  if (answer$status != 200) stop(answer$body$error$message)
  answer$body
}
