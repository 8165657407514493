"""Production traces turned into golden candidates, and labelled candidates added to a dataset."""
