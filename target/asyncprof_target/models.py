"""The one table the seed's page reads."""

from django.db import models


class Item(models.Model):
    """A row of the ``item`` table; asyncprof creates and seeds it, not a migration."""

    name = models.CharField(max_length=100)
    description = models.TextField()
    price = models.DecimalField(max_digits=10, decimal_places=2)
    created = models.DateTimeField()

    class Meta:
        db_table = "item"
        managed = False
