def add(args):
    result = args["a"] + args["b"]
    return result
