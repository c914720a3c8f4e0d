# The quickstart's add, in R: the argument is a list made from the request's JSON.
add <- function(args) {
  args$a + args$b
}

# A named list comes back as a JSON object.
describe <- function(args) {
  x <- unlist(args$values)
  list(n = length(x), mean = mean(x), max = max(x))
}
