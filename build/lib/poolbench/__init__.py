"""poolbench: does the [CLS] token's final state aggregate a sequence's meaning?"""
